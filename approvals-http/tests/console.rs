//! The review console: sign-in, sessions, CSRF, escaping of hostile text, security headers.

mod common;

use approvals_core::{
    ActionRequest, Initiator, Link, Preview, Principal, RequestContext, RequestId, RequestState,
    Store as _,
};
use approvals_http::ReviewServer;
use approvals_testkit::hostile;
use common::console::*;
use common::*;
use http::Method;

/// Origin header, form fields, expected status.
type Attempt<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, u16);

async fn state(f: &Fixture, id: RequestId) -> RequestState {
    f.gate.get(id).await.expect("store").expect("record").state
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_pages_need_it() {
    let f = fixture();
    for path in ["/console/", "/console/requests", "/console/history"] {
        let r = send(&f.server, Method::GET, path, None, None, None).await;
        assert_eq!(r.status, 303, "{path}");
        assert_eq!(r.header("location"), Some("/console/login"));
    }
    let r = send(
        &f.server,
        Method::POST,
        "/console/login",
        None,
        Some(ORIGIN),
        Some(&[("token", SAM)]),
    )
    .await;
    assert_eq!(r.status, 303);
    let set = r.header("set-cookie").expect("cookie");
    assert!(set.starts_with("approvals_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} has {attr}");
    }
    assert!(!set.contains(SAM), "the token never goes into the cookie");
    let cookie = set.split(';').next().expect("pair");
    let page = send(
        &f.server,
        Method::GET,
        "/console/requests",
        Some(cookie),
        None,
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Sam Reviewer"));

    // A forged or stale cookie is nobody.
    let r = send(
        &f.server,
        Method::GET,
        "/console/requests",
        Some("approvals_session=forged"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 303);
}

/// The pending list shows one page and links to the next ("Older requests"), keeping the
/// filters; following the links shows every pending request once.
#[tokio::test]
async fn the_pending_list_pages_with_an_older_link() {
    let f = fixture();
    let mut submitted = Vec::new();
    for i in 0..5 {
        submitted.push(
            submit(
                &f.gate,
                &export().idempotency_key(format!("console-page-{i}")),
            )
            .await,
        );
    }
    let cookie = login(&f.server, SAM).await;
    let mut path = "/console/requests?kind=data.export&limit=2".to_owned();
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..5 {
        let page = send(&f.server, Method::GET, &path, Some(&cookie), None, None).await;
        assert_eq!(page.status, 200, "{path}");
        let html = page.text();
        // The requests of this page, in the order the page lists them.
        let mut listed: Vec<(usize, String)> = submitted
            .iter()
            .filter_map(|id| {
                html.find(&format!("/console/requests/{id}"))
                    .map(|at| (at, id.to_string()))
            })
            .collect();
        listed.sort();
        seen.extend(listed.into_iter().map(|(_, id)| id));
        let Some(at) = html.find(r#"<a rel="next" href=""#) else {
            break;
        };
        let href = html[at + r#"<a rel="next" href=""#.len()..]
            .split('"')
            .next()
            .expect("href")
            .replace("&amp;", "&");
        assert!(
            href.contains("kind=data.export") && href.contains("limit=2"),
            "{href}"
        );
        path = href;
    }
    let newest_first: Vec<String> = submitted.iter().rev().map(ToString::to_string).collect();
    assert_eq!(seen, newest_first);
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed() {
    let f = fixture();
    let server = ReviewServer::builder(f.gate.clone())
        .tokens(tokens())
        .public_url("https://approvals.example.com/".parse().expect("url"))
        .build();
    let r = send(
        &server,
        Method::POST,
        "/console/login",
        None,
        Some("https://approvals.example.com"),
        Some(&[("token", SAM)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").expect("cookie");
    assert!(set.starts_with("__Host-approvals_session="), "{set}");
    assert!(set.contains("; Secure"), "{set}");
    // The origin is the configured public URL, not the Host header.
    let r = send(
        &server,
        Method::POST,
        "/console/login",
        None,
        Some(ORIGIN),
        Some(&[("token", SAM)]),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn bad_tokens_agent_tokens_and_cross_site_sign_ins_are_refused() {
    let f = fixture();
    let cases: [(&str, Option<&str>, u16); 5] = [
        ("wrong-token", Some(ORIGIN), 401),
        ("", Some(ORIGIN), 401),
        (BOT, Some(ORIGIN), 403),
        (SVC, Some(ORIGIN), 403),
        (SAM, Some("https://evil.example"), 403),
    ];
    for (token, origin, status) in cases {
        let r = send(
            &f.server,
            Method::POST,
            "/console/login",
            None,
            origin,
            Some(&[("token", token)]),
        )
        .await;
        assert_eq!(r.status.as_u16(), status, "{token:?} from {origin:?}");
        assert!(r.header("set-cookie").is_none());
    }
    // No Origin and no Referer: refused too.
    let r = send(
        &f.server,
        Method::POST,
        "/console/login",
        None,
        None,
        Some(&[("token", SAM)]),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn decisions_need_the_session_csrf_token_and_same_origin() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let digest = f
        .gate
        .get(id)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    let cookie = login(&f.server, SAM).await;
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.text());
    let other_cookie = login(&f.server, ADMIN).await;
    let other_page = send(
        &f.server,
        Method::GET,
        "/console/requests",
        Some(&other_cookie),
        None,
        None,
    )
    .await;
    let other_csrf = csrf_of(&other_page.text());
    assert_ne!(csrf, other_csrf, "each session has its own CSRF token");

    let path = format!("/console/requests/{id}/decision");
    let attempts: Vec<Attempt<'_>> = vec![
        // No CSRF token.
        (
            Some(ORIGIN),
            vec![("verdict", "approve"), ("digest", &digest)],
            403,
        ),
        // Wrong token.
        (
            Some(ORIGIN),
            vec![
                ("csrf", "guess"),
                ("verdict", "approve"),
                ("digest", &digest),
            ],
            403,
        ),
        // Another session's token.
        (
            Some(ORIGIN),
            vec![
                ("csrf", &other_csrf),
                ("verdict", "approve"),
                ("digest", &digest),
            ],
            403,
        ),
        // Right token, posted from another site.
        (
            Some("https://evil.example"),
            vec![("csrf", &csrf), ("verdict", "approve"), ("digest", &digest)],
            403,
        ),
        // Right token, no Origin or Referer.
        (
            None,
            vec![("csrf", &csrf), ("verdict", "approve"), ("digest", &digest)],
            403,
        ),
        // Right token, but no digest: the console always binds decisions to what it showed.
        (
            Some(ORIGIN),
            vec![("csrf", &csrf), ("verdict", "approve")],
            400,
        ),
    ];
    for (origin, fields, status) in &attempts {
        let r = send(
            &f.server,
            Method::POST,
            &path,
            Some(&cookie),
            *origin,
            Some(fields),
        )
        .await;
        assert_eq!(
            r.status.as_u16(),
            *status,
            "{origin:?} {fields:?}: {}",
            r.text()
        );
        assert_eq!(
            state(&f, id).await,
            RequestState::Pending,
            "nothing changed"
        );
    }
    // Without a session at all.
    let r = send(
        &f.server,
        Method::POST,
        &path,
        None,
        Some(ORIGIN),
        Some(&[("csrf", &csrf), ("verdict", "approve"), ("digest", &digest)]),
    )
    .await;
    assert_eq!(r.status, 401);
    let forged = f
        .audit
        .for_request(id)
        .iter()
        .filter(|e| serde_json::to_value(e).expect("event")["cause"] == "forged")
        .count();
    assert_eq!(forged, 6, "every refused post is evidence");

    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&[
            ("csrf", &csrf),
            ("verdict", "approve"),
            ("digest", &digest),
            ("reason", "checked FIN-1"),
        ]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(state(&f, id).await, RequestState::Approved);
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.reviews[0].channel, "web");
    assert_eq!(record.reviews[0].reason.as_deref(), Some("checked FIN-1"));

    let after = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(after.text().contains("You approved this request"));
    let history = send(
        &f.server,
        Method::GET,
        "/console/history",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(history.text().contains("Sam Reviewer") && history.text().contains("checked FIN-1"));
}

#[tokio::test]
async fn the_requester_and_outsiders_see_no_form_and_a_forced_post_changes_nothing() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let digest = f
        .gate
        .get(id)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    for (token, notice) in [
        (DANA, "You cannot review your own request"),
        (EVE, "You are not one of the reviewers this request needs"),
    ] {
        let cookie = login(&f.server, token).await;
        let page = send(
            &f.server,
            Method::GET,
            &format!("/console/requests/{id}"),
            Some(&cookie),
            None,
            None,
        )
        .await;
        let html = page.text();
        assert!(html.contains(notice), "{token}: {html}");
        assert!(!html.contains(r#"value="approve""#));
        let csrf = csrf_of(&html); // from the sign-out form
        let r = send(
            &f.server,
            Method::POST,
            &format!("/console/requests/{id}/decision"),
            Some(&cookie),
            Some(ORIGIN),
            Some(&[("csrf", &csrf), ("verdict", "approve"), ("digest", &digest)]),
        )
        .await;
        assert_eq!(r.status, 403, "{token}");
        assert!(r.text().contains("Nothing was decided"));
        assert_eq!(state(&f, id).await, RequestState::Pending);
    }
}

/// The request page is where every cut preview points: it shows the preview whole (every line
/// of a long diff, every row), each piece escaped, and says the approval covers it.
#[tokio::test]
async fn the_request_page_shows_the_whole_preview_escaped() {
    let f = fixture();
    let evil = r#"<script>alert('x')</script>"#;
    let mut diff = format!("--- a/{evil}\n+++ b/x\n@@ -1,500 +1,500 @@\n-{evil}\n");
    for i in 0..500 {
        diff.push_str(&format!("+line {i}\n"));
    }
    let cookie = login(&f.server, SAM).await;
    let page = async |action: ActionRequest| {
        let id = submit(&f.gate, &action).await;
        let path = format!("/console/requests/{id}");
        send(&f.server, Method::GET, &path, Some(&cookie), None, None)
            .await
            .text()
    };
    let export = || ActionRequest::new("data.export", "db://prod/customers");

    let html = page(export().preview(Preview::diff(diff))).await;
    assert!(html.contains("Preview: Diff"), "{html}");
    assert!(
        html.contains(r#"<span class="d-add">+line 499</span>"#),
        "the whole diff"
    );
    assert!(html.contains(
        r#"<span class="d-del">-&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</span>"#
    ));
    assert!(html.contains(r#"<span class="d-hunk">@@ -1,500 +1,500 @@</span>"#));
    assert!(!html.contains("<script"), "raw markup");
    assert!(html.contains("The approval covers this preview"));

    let rows: Vec<Vec<String>> = (0..1000)
        .map(|i| vec![i.to_string(), format!("{evil}\u{202E}{i}")])
        .collect();
    let html = page(export().preview(Preview::rows(
        vec!["id".into(), evil.into()],
        rows,
        Some(20_000),
    )))
    .await;
    assert!(
        html.contains("Preview: Affected rows (1000 of 20000)"),
        "{html}"
    );
    assert!(html.contains("<th>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</th>"));
    assert!(html.contains(
        "<td>999</td><td>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;‹U+202E›999</td>"
    ));
    assert!(!html.contains("<script") && !html.contains('\u{202E}'));

    let html = page(export().preview(Preview::dry_run(format!("Plan: {evil}")))).await;
    assert!(
        html.contains(r#"<pre class="preview" id="preview">Plan: &lt;script&gt;"#),
        "{html}"
    );
}

#[tokio::test]
async fn hostile_text_is_escaped_everywhere_and_pages_forbid_script() {
    let f = fixture();
    let evil = r#"<script>alert('x')</script>"><img src=x onerror=alert(1)>"#;
    let action = ActionRequest::new(format!("data.export{evil}"), format!("db://{evil}"))
        .params(serde_json::json!({ "note": evil, evil: "key", "rtl": "safe\u{202e}txt.exe" }))
        .summary(evil)
        .justification(evil)
        .context(RequestContext {
            environment: Some(evil.into()),
            ticket: Some(evil.into()),
            impact: Some(evil.into()),
            prompt_excerpt: Some(evil.into()),
            links: vec![Link {
                label: evil.into(),
                url: "javascript:alert(document.cookie)".into(),
            }],
            labels: [(evil.to_owned(), evil.to_owned())].into_iter().collect(),
            ..Default::default()
        });
    // Hostile names and model come from the caller's (door-authenticated) identity: an
    // action cannot name its initiator.
    let caller = Initiator::agent("bot")
        .on_behalf_of(Principal::human("dana@example.com").with_name(evil))
        .model(evil);
    let id = match f.gate.submit_as(&caller, &action).await.expect("submit") {
        approvals_core::Submission::Pending(id) => id,
        approvals_core::Submission::Allowed(_) => panic!("the fixture policy requires approval"),
    };
    let cookie = login(&f.server, SAM).await;
    for path in [
        format!("/console/requests/{id}"),
        "/console/requests".to_owned(),
        format!("/console/requests?kind={}", urlencode(evil)),
    ] {
        let r = send(&f.server, Method::GET, &path, Some(&cookie), None, None).await;
        assert_eq!(r.status, 200, "{path}");
        let html = r.text();
        assert!(!html.contains("<script"), "{path}: raw script tag");
        assert!(!html.contains("<img"), "{path}: raw img tag");
        assert!(!html.contains("onerror=alert(1)>"), "{path}");
        assert!(
            !html.contains("href=\"javascript:"),
            "{path}: live javascript link"
        );
        assert!(
            !html.contains('\u{202e}'),
            "{path}: direction override shown raw"
        );
        assert_eq!(
            r.header("content-security-policy"),
            Some(approvals_http::console::CONTENT_SECURITY_POLICY)
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
    let detail = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await
    .text();
    assert!(detail.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(
        detail.contains("safe‹U+202E›txt.exe"),
        "the override is shown visibly"
    );
    // Scripts only from this origin (the passkey ceremony's file): no inline script, no
    // eval, no other host, so planted markup cannot run even where escaping failed.
    let csp = approvals_http::console::CONTENT_SECURITY_POLICY;
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'none'"), "{csp}");
    assert!(directives.contains(&"script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe") && !csp.contains("*") && !csp.contains("data:"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    // The page carries no script of its own: an inline one would not run, and none is there.
    assert!(
        !detail.replace("&lt;script&gt;", "").contains("<script>"),
        "{detail}"
    );
}

/// The cross-surface table of hostile characters against the console: each one, planted in
/// every untrusted field of a pending and of a denied request, is shown as its visible marker
/// on the request's page, and none reaches any page (detail, pending list, history).
#[tokio::test]
async fn every_hostile_character_is_shown_as_a_visible_marker_on_every_page() {
    let f = fixture();
    let cookie = login(&f.server, SAM).await;
    let mut planted = Vec::new();
    let strings = hostile::STRINGS.iter().map(|s| ('\0', *s, (*s).to_owned()));
    let chars = hostile::CHARS
        .iter()
        .map(|&(c, what)| (c, what, format!("x{c}y")));
    for (c, what, text) in chars.chain(strings) {
        for state in [RequestState::Pending, RequestState::Denied] {
            let mut record = hostile::record(&text, state);
            record.request.idempotency_key = None;
            f.store.insert(&record).await.expect("stored");
            planted.push((record.id, c, what));
        }
    }
    for (id, c, what) in planted {
        let page = send(
            &f.server,
            Method::GET,
            &format!("/console/requests/{id}"),
            Some(&cookie),
            None,
            None,
        )
        .await;
        assert_eq!(page.status, 200, "{what}");
        if c == '\0' {
            hostile::assert_clean(&page.text(), what);
        } else {
            hostile::assert_shown(&page.text(), c, what);
        }
    }
    for path in ["/console/requests", "/console/history"] {
        let page = send(&f.server, Method::GET, path, Some(&cookie), None, None).await;
        assert_eq!(page.status, 200, "{path}");
        hostile::assert_clean(&page.text(), path);
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_and_ends_the_session() {
    let f = fixture();
    let cookie = login(&f.server, SAM).await;
    let page = send(
        &f.server,
        Method::GET,
        "/console/requests",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let csrf = csrf_of(&page.text());
    let r = send(
        &f.server,
        Method::POST,
        "/console/logout",
        Some(&cookie),
        Some(ORIGIN),
        Some(&[("csrf", "nope")]),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        &f.server,
        Method::POST,
        "/console/logout",
        Some(&cookie),
        Some(ORIGIN),
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let r = send(
        &f.server,
        Method::GET,
        "/console/requests",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 303, "the old cookie no longer works");
}

#[tokio::test]
async fn an_unused_approval_can_be_revoked_from_the_console() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let digest = f
        .gate
        .get(id)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    let cookie = login(&f.server, SAM).await;
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    let csrf = csrf_of(&page.text());
    let path = format!("/console/requests/{id}/decision");
    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&[("csrf", &csrf), ("verdict", "approve"), ("digest", &digest)]),
    )
    .await;
    assert_eq!(r.status, 303);
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(page.text().contains("Revoke (deny)"), "{}", page.text());
    assert!(!page.text().contains(r#"value="approve""#));
    let other = login(&f.server, ADMIN).await;
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&other),
        None,
        None,
    )
    .await;
    assert!(
        !page.text().contains("Revoke (deny)"),
        "only allowed reviewers may revoke"
    );
    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&[
            ("csrf", &csrf),
            ("verdict", "deny"),
            ("digest", &digest),
            ("reason", "wrong bucket"),
        ]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(state(&f, id).await, RequestState::Denied);
    assert!(f.gate.wait(id).await.is_err(), "the agent gets no grant");
}

/// A reviewer proposes a standing grant from a request page (same origin and session token
/// only), sees it listed with its uses left once approved, and revokes it from its page.
#[tokio::test]
async fn a_standing_grant_is_proposed_listed_and_revoked_in_the_console() {
    let f = fixture_with(
        approvals_core::Requirement::groups(["security"])
            .standing(std::time::Duration::from_secs(3600), 5),
    );
    let id = submit(&f.gate, &export()).await;
    let cookie = login(&f.server, SAM).await;
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(page.text().contains("Allow for a while"), "{}", page.text());
    let csrf = csrf_of(&page.text());
    let path = format!("/console/requests/{id}/standing");
    let fields = [
        ("csrf", csrf.as_str()),
        ("resource", "db://prod/*"),
        ("for", "30m"),
        ("uses", "2"),
        ("justification", "month end <script>alert(1)</script>"),
    ];
    for (origin, what) in [
        (Some("https://evil.example"), "another origin"),
        (None, "no origin"),
    ] {
        let r = send(
            &f.server,
            Method::POST,
            &path,
            Some(&cookie),
            origin,
            Some(&fields),
        )
        .await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    let mut no_token = fields;
    no_token[0] = ("csrf", "forged");
    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&no_token),
    )
    .await;
    assert_eq!(r.status, 403);
    let mut too_long = fields;
    too_long[2] = ("for", "2h");
    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&too_long),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("at most 1h"), "{}", r.text());
    assert_eq!(
        f.store.list(&Default::default()).await.expect("list").len(),
        1
    );

    let r = send(
        &f.server,
        Method::POST,
        &path,
        Some(&cookie),
        Some(ORIGIN),
        Some(&fields),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("location").to_owned();
    let grant = RequestId::parse(location.rsplit('/').next().expect("id")).expect("an id");
    let page = send(&f.server, Method::GET, &location, Some(&cookie), None, None).await;
    let html = page.text();
    assert!(html.contains("Standing grant"), "{html}");
    assert!(html.contains("once approved by the rule"), "{html}");
    assert!(
        !html.contains("<script>alert"),
        "the justification is escaped"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");

    f.gate
        .decide(
            grant,
            approvals_core::Review::approve(
                Principal::human("root@example.com").with_groups(["security"]),
            ),
        )
        .await
        .expect("approved");
    let covered = submit(&f.gate, &export().params(serde_json::json!({"rows": 1}))).await;
    assert_eq!(state(&f, covered).await, RequestState::Approved);
    let list = send(
        &f.server,
        Method::GET,
        "/console/standing",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let html = list.text();
    assert!(html.contains(r#"<td class="uses">1 of 2</td>"#), "{html}");
    assert!(html.contains("db://prod/*"), "{html}");

    let page = send(&f.server, Method::GET, &location, Some(&cookie), None, None).await;
    let html = page.text();
    assert!(html.contains("Revoke the standing grant"), "{html}");
    assert!(html.contains(r#"<dd id="uses-left">1 of 2</dd>"#), "{html}");
    let digest = f
        .gate
        .get(grant)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    let r = send(
        &f.server,
        Method::POST,
        &format!("/console/requests/{grant}/decision"),
        Some(&cookie),
        Some(ORIGIN),
        Some(&[
            ("csrf", &csrf_of(&html)),
            ("verdict", "deny"),
            ("digest", &digest),
        ]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(state(&f, grant).await, RequestState::Denied);
    let list = send(
        &f.server,
        Method::GET,
        "/console/standing",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(
        list.text().contains(r#"id="no-standing""#),
        "{}",
        list.text()
    );
    let after = submit(&f.gate, &export().params(serde_json::json!({"rows": 2}))).await;
    assert_eq!(
        state(&f, after).await,
        RequestState::Pending,
        "asked after the revocation"
    );
}

#[tokio::test]
async fn a_plans_page_shows_every_action_with_its_digest_escaped_and_what_ran() {
    let f = fixture();
    let evil = r#"<script>alert('x')</script>"#;
    let action = |table: &str| {
        ActionRequest::new("data.export", format!("db://prod/{table}"))
            .params(serde_json::json!({"note": format!("{evil}\u{202E}")}))
            .preview(Preview::dry_run(format!("would export {evil}")))
    };
    let items: Vec<ActionRequest> = (0..30).map(|i| action(&format!("t{i}{evil}"))).collect();
    let plan = f
        .gate
        .submit_plan(&items, Some(format!("month end {evil}")))
        .await
        .expect("plan");
    let cookie = login(&f.server, SAM).await;
    let path = format!("/console/requests/{plan}");
    let html = send(&f.server, Method::GET, &path, Some(&cookie), None, None)
        .await
        .text();
    assert!(html.contains("Plan: 30 action(s)"), "{html}");
    let record = f.gate.get(plan).await.expect("store").expect("record");
    let status = approvals_core::plan::PlanStatus::of(&record).expect("a plan");
    for (i, item) in status.items.iter().enumerate() {
        assert!(html.contains(&format!(r#"id="plan-item-{}""#, i + 1)));
        assert!(html.contains(&item.digest.to_string()), "item {i}'s digest");
    }
    assert!(html.contains("db://prod/t29&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("would export &lt;script&gt;"));
    assert!(
        !html.contains("<script") && !html.contains('\u{202E}'),
        "escaped"
    );
    assert!(
        !html.contains(r#"id="params""#),
        "the items, not the raw parameters"
    );
    assert!(!html.contains("ran under the plan"));

    f.gate
        .decide(
            plan,
            approvals_core::Review::approve(
                Principal::human("sam@example.com").with_groups(["security"]),
            ),
        )
        .await
        .expect("approved");
    let ran = submit(&f.gate, &items[4].clone().in_plan(plan)).await;
    assert_eq!(state(&f, ran).await, RequestState::Approved);
    let html = send(&f.server, Method::GET, &path, Some(&cookie), None, None)
        .await
        .text();
    assert_eq!(html.matches("ran under the plan").count(), 1);
    assert!(
        html.contains("Revoke the plan"),
        "a reviewer may still deny it"
    );
    let fifth = html.find(r#"id="plan-item-5""#).expect("item 5");
    let sixth = html.find(r#"id="plan-item-6""#).expect("item 6");
    assert!(html[fifth..sixth].contains("ran under the plan"));
}

/// Registering a passkey takes a fresh sign-in: with the window passed, the console refuses
/// to start a registration (a session taken from its owner later cannot add a key of its
/// own); within it, the options come back. Both need the session's CSRF token and origin.
#[tokio::test]
async fn registering_a_passkey_needs_a_fresh_sign_in_and_the_sessions_token() {
    let f = fixture();
    let server = |window: std::time::Duration| {
        approvals_http::ReviewServer::builder(f.gate.clone())
            .tokens(tokens())
            .public_url(ORIGIN.parse().expect("url"))
            .passkey_registration_window(window)
            .build()
    };
    let start = async |server: &approvals_http::ReviewServer, cookie: &str, csrf: &str| {
        let request = http::Request::builder()
            .method(Method::POST)
            .uri("/console/passkeys/register/options")
            .header(http::header::HOST, HOST)
            .header(http::header::ORIGIN, ORIGIN)
            .header(http::header::COOKIE, cookie)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-csrf-token", csrf)
            .body(bytes::Bytes::from_static(b"{\"name\": \"laptop\"}"))
            .expect("request");
        let response = server.handle(request).await;
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(response.body()).expect("a JSON answer");
        (status, body)
    };
    for (window, fresh) in [
        (std::time::Duration::ZERO, false),
        (std::time::Duration::from_secs(600), true),
    ] {
        let server = server(window);
        let cookie = login(&server, SAM).await;
        let page = send(
            &server,
            Method::GET,
            "/console/passkeys",
            Some(&cookie),
            None,
            None,
        )
        .await;
        assert_eq!(page.status, 200);
        let csrf = csrf_of(&page.text());
        assert_eq!(
            start(&server, &cookie, "wrong").await.0,
            403,
            "the session's token is needed"
        );
        let (status, body) = start(&server, &cookie, &csrf).await;
        if fresh {
            assert_eq!(status, 200, "{body}");
            assert!(body["publicKey"]["challenge"].is_string(), "{body}");
            assert_eq!(body["publicKey"]["rp"]["id"], "review.test");
        } else {
            assert_eq!(status, 403, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("sign in again")),
                "{body}"
            );
        }
    }
}

/// A link to a request (what Slack's and Teams' "Approve with passkey" open) reached while
/// signed out comes back to that request after signing in; `next` names only a request page
/// of this console, so a crafted link cannot send the reviewer anywhere else.
#[tokio::test]
async fn signing_in_from_a_request_link_returns_to_the_request_and_nowhere_else() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let page = send(
        &f.server,
        Method::GET,
        &format!("/console/requests/{id}"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(page.status, 303);
    let to_login = page.header("location").expect("location").to_owned();
    assert_eq!(
        to_login,
        format!("/console/login?next=/console/requests/{id}")
    );
    let login_page = send(&f.server, Method::GET, &to_login, None, None, None).await;
    assert!(
        login_page
            .text()
            .contains(&format!(r#"name="next" value="/console/requests/{id}""#)),
        "{}",
        login_page.text()
    );
    let next = format!("/console/requests/{id}");
    for (asked, lands) in [
        (next.as_str(), next.as_str()),
        ("https://evil.example/console/requests/x", "/console/"),
        ("//evil.example/", "/console/"),
        ("/console/requests/../../v1/requests", "/console/"),
        (&*format!("/console/requests/{id}/decision"), "/console/"),
        ("", "/console/"),
    ] {
        let r = send(
            &f.server,
            Method::POST,
            "/console/login",
            None,
            Some(ORIGIN),
            Some(&[("token", SAM), ("next", asked)]),
        )
        .await;
        assert_eq!(r.status, 303, "{asked}");
        assert_eq!(r.header("location"), Some(lands), "{asked}");
    }
}
