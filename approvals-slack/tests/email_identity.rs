//! The email lookup hands the directory canonical addresses only: spellings of one address
//! resolve to one person, and addresses with invisible, bidi-control or mixed-script
//! characters are refused before any directory sees them (issue 16, item 3).

use std::sync::{Arc, Mutex};

use approvals_core::identity;
use approvals_core::{IdentityError, IdentityResolver, Principal};
use approvals_slack::SlackEmailResolver;
use approvals_slack::fake::{self, FakeSlack};
use async_trait::async_trait;

/// A careless directory: it matches addresses loosely (by identity key) and records what it
/// was asked, so a spoofed address that reached it would resolve.
#[derive(Clone, Default)]
struct LooseDirectory {
    asked: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl IdentityResolver for LooseDirectory {
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(external_id.to_owned());
        if identity::same_id(external_id, "sam@example.com") {
            Ok(Principal::human("sam@example.com").with_groups(["security"]))
        } else {
            Err(IdentityError::Unknown {
                channel: channel.to_owned(),
                external_id: external_id.to_owned(),
            })
        }
    }
}

#[tokio::test]
async fn email_lookup_asks_for_canonical_addresses_and_refuses_spoofed_ones() {
    let fake = FakeSlack::start().await.expect("fake");
    fake.add_user("U0SAM", fake::TEAM_ID, Some(" SAM@Example.COM. "));
    fake.add_user(
        "U0WIDE",
        fake::TEAM_ID,
        Some("ｓａｍ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
    );
    let spoofed = [
        ("U0ZWSP", "sam\u{200B}@example.com"),
        ("U0BOM", "\u{FEFF}sam@example.com"),
        ("U0RLO", "\u{202E}moc.elpmaxe@mas"),
        ("U0CYR", "s\u{0430}m@example.com"),
        ("U0SPACE", "sam @example.com"),
        ("U0BOLD", "\u{1D42C}am@example.com"),
    ];
    for (user, email) in spoofed {
        fake.add_user(user, fake::TEAM_ID, Some(email));
    }
    let directory = LooseDirectory::default();
    let resolver = SlackEmailResolver::new(fake.client(), directory.clone()).team(fake::TEAM_ID);

    for user in ["U0SAM", "U0WIDE"] {
        let sam = resolver.resolve("slack", user).await.expect(user);
        assert_eq!(sam.id, "sam@example.com", "{user}");
    }
    for (user, email) in spoofed {
        assert!(
            matches!(
                resolver.resolve("slack", user).await,
                Err(IdentityError::Unknown { .. })
            ),
            "{user} {email:?}"
        );
    }
    let asked = directory
        .asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(asked, ["sam@example.com", "sam@example.com"]);
}
