//! What a credential for one action grants: the action's parameters checked against what its
//! kind is allowed ([`Plan`]), the scope line humans read, and the SQL that grants it. Pure: no
//! database access.

use std::fmt;
use std::str::FromStr;

use approvals_core::credential::BrokerError;
use approvals_core::lifecycle::MAX_SCOPE_CHARS;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::ident::{is_plain_identifier, quoted, shown};

/// Most tables one action may name.
pub const MAX_TABLES: usize = 16;
/// Most columns one action may name.
pub const MAX_COLUMNS: usize = 64;

/// A table privilege the broker can grant.
///
/// ```
/// use approvals_broker_postgres::Privilege;
///
/// assert_eq!("select".parse::<Privilege>(), Ok(Privilege::Select));
/// assert_eq!(Privilege::Delete.to_string(), "DELETE");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Privilege {
    /// `SELECT`: read rows.
    Select,
    /// `INSERT`: add rows.
    Insert,
    /// `UPDATE`: change rows (PostgreSQL also needs `SELECT` for an `UPDATE .. WHERE`).
    Update,
    /// `DELETE`: remove rows. Cannot be limited to columns.
    Delete,
}

impl Privilege {
    /// Every privilege, in the order scopes list them.
    pub const ALL: [Privilege; 4] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
    ];

    /// The SQL keyword.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }

    /// Whether a grant of it can name columns (`DELETE` cannot).
    pub fn takes_columns(self) -> bool {
        self != Privilege::Delete
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// A privilege name that is not `select`, `insert`, `update` or `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPrivilege(pub String);

impl fmt::Display for UnknownPrivilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown privilege {:?}: use select, insert, update or delete",
            shown(&self.0)
        )
    }
}

impl std::error::Error for UnknownPrivilege {}

impl FromStr for Privilege {
    type Err = UnknownPrivilege;

    /// The lowercase name, exactly (`select`, `insert`, `update`, `delete`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "select" => Ok(Privilege::Select),
            "insert" => Ok(Privilege::Insert),
            "update" => Ok(Privilege::Update),
            "delete" => Ok(Privilege::Delete),
            _ => Err(UnknownPrivilege(s.to_owned())),
        }
    }
}

/// A schema-qualified table name, both parts plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub schema: String,
    pub name: String,
}

impl Table {
    /// `schema.table` or `table` (in `public`). System schemas are refused: a credential
    /// never reads the catalog through the broker.
    fn parse(text: &str) -> Result<Table, BrokerError> {
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (schema, name),
            None => ("public", text),
        };
        if !is_plain_identifier(schema) || !is_plain_identifier(name) {
            return Err(refused(format!(
                "table {:?} is not `schema.table` of plain lowercase identifiers ([a-z_][a-z0-9_]*, at most 63 bytes)",
                shown(text)
            )));
        }
        if schema.starts_with("pg_") || schema == "information_schema" {
            return Err(refused(format!(
                "table {:?} is in a system schema",
                shown(text)
            )));
        }
        Ok(Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }

    fn sql(&self) -> String {
        format!("{}.{}", quoted(&self.schema), quoted(&self.name))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What one action's credential grants, checked: tables, optional columns, privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub tables: Vec<Table>,
    pub columns: Vec<String>,
    pub privileges: Vec<Privilege>,
}

impl Plan {
    /// Reads `params` (`table` or `tables`, optional `columns`, optional `privileges`) of an
    /// action whose kind may be granted `allowed`. Everything is refused that is not exactly
    /// what the broker hands out.
    pub fn new(kind: &str, allowed: &[Privilege], params: &Value) -> Result<Plan, BrokerError> {
        let Value::Object(params) = params else {
            return Err(refused(
                "the action's params must be an object naming `table` or `tables`".into(),
            ));
        };
        let names = match (params.get("table"), params.get("tables")) {
            (Some(Value::String(one)), None) => vec![one.as_str()],
            (None, Some(many)) => strings(many, "tables", MAX_TABLES)?,
            (Some(_), Some(_)) => {
                return Err(refused("name either `table` or `tables`, not both".into()));
            }
            (Some(_), None) => return Err(refused("`table` must be a string".into())),
            (None, None) => {
                return Err(refused(
                    "the action names no table: set params.table (\"schema.table\") or params.tables"
                        .into(),
                ));
            }
        };
        let mut tables: Vec<Table> = Vec::with_capacity(names.len());
        for name in names {
            let table = Table::parse(name)?;
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        let mut columns: Vec<String> = Vec::new();
        if let Some(value) = params.get("columns") {
            for name in strings(value, "columns", MAX_COLUMNS)? {
                if !is_plain_identifier(name) {
                    return Err(refused(format!(
                        "column {:?} is not a plain lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)",
                        shown(name)
                    )));
                }
                if !columns.iter().any(|c| c == name) {
                    columns.push(name.to_owned());
                }
            }
        }
        let privileges = match params.get("privileges") {
            None => allowed.to_vec(),
            Some(value) => {
                let mut asked = Vec::new();
                for name in strings(value, "privileges", Privilege::ALL.len() * 4)? {
                    let privilege: Privilege = name.parse().map_err(|e| refused(format!("{e}")))?;
                    if !allowed.contains(&privilege) {
                        return Err(refused(format!(
                            "{privilege} is not allowed for action kind {:?}",
                            shown(kind)
                        )));
                    }
                    asked.push(privilege);
                }
                asked
            }
        };
        let privileges: Vec<Privilege> = Privilege::ALL
            .into_iter()
            .filter(|p| privileges.contains(p))
            .collect();
        if privileges.is_empty() {
            return Err(refused(format!(
                "no privilege is allowed for action kind {:?}",
                shown(kind)
            )));
        }
        if !columns.is_empty() && privileges.contains(&Privilege::Delete) {
            return Err(refused(
                "DELETE cannot be limited to columns: leave out `columns` or ask for other privileges"
                    .into(),
            ));
        }
        let plan = Plan {
            tables,
            columns,
            privileges,
        };
        // The longest line (with " until <time>") must fit an audited scope.
        let longest = plan.scope().chars().count() + " until 0000-00-00T00:00:00Z".len();
        if longest > MAX_SCOPE_CHARS {
            return Err(refused(format!(
                "the action names too much for one credential (its scope would be {longest} characters, at most {MAX_SCOPE_CHARS})"
            )));
        }
        Ok(plan)
    }

    /// `SELECT, INSERT (id, total) on public.invoices, public.lines`.
    pub fn scope(&self) -> String {
        let privileges = self
            .privileges
            .iter()
            .map(|p| p.as_sql())
            .collect::<Vec<_>>()
            .join(", ");
        let columns = if self.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.columns.join(", "))
        };
        let tables = self
            .tables
            .iter()
            .map(Table::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("{privileges}{columns} on {tables}")
    }

    /// The scope of a credential valid until `expires_at`.
    pub fn scope_until(&self, expires_at: DateTime<Utc>) -> String {
        format!("{} until {}", self.scope(), timestamp(expires_at))
    }

    /// The schemas holding the tables, each once.
    pub fn schemas(&self) -> Vec<&str> {
        let mut schemas: Vec<&str> = Vec::new();
        for table in &self.tables {
            if !schemas.contains(&table.schema.as_str()) {
                schemas.push(&table.schema);
            }
        }
        schemas
    }

    /// The statements that grant the plan to `role` (a checked credential id): `USAGE` on
    /// each schema, then the privileges on each table. Only checked identifiers are inlined.
    pub fn grants(&self, role: &str) -> Vec<String> {
        let role = format!("\"{role}\"");
        let mut statements: Vec<String> = self
            .schemas()
            .into_iter()
            .map(|schema| format!("GRANT USAGE ON SCHEMA {} TO {role}", quoted(schema)))
            .collect();
        let columns = self
            .columns
            .iter()
            .map(|c| quoted(c))
            .collect::<Vec<_>>()
            .join(", ");
        let privileges = self
            .privileges
            .iter()
            .map(|p| {
                if columns.is_empty() {
                    p.as_sql().to_owned()
                } else {
                    format!("{} ({columns})", p.as_sql())
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        for table in &self.tables {
            statements.push(format!(
                "GRANT {privileges} ON TABLE {} TO {role}",
                table.sql()
            ));
        }
        statements
    }
}

/// `2026-12-04T06:00:00Z`: whole seconds, UTC.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An array of at most `max` strings, not empty.
fn strings<'a>(value: &'a Value, field: &str, max: usize) -> Result<Vec<&'a str>, BrokerError> {
    let Value::Array(items) = value else {
        return Err(refused(format!("`{field}` must be an array of strings")));
    };
    if items.is_empty() || items.len() > max {
        return Err(refused(format!(
            "`{field}` must name 1 to {max} entries, not {}",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| refused(format!("`{field}` must be an array of strings")))
        })
        .collect()
}

fn refused(message: String) -> BrokerError {
    BrokerError::Refused(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Privilege] = &Privilege::ALL;

    fn plan(params: Value) -> Result<Plan, BrokerError> {
        Plan::new("db.export", ALL, &params)
    }

    #[test]
    fn a_table_in_public_by_default_with_every_allowed_privilege() {
        let p = Plan::new(
            "db.export",
            &[Privilege::Select],
            &json!({"table": "invoices"}),
        )
        .expect("plan");
        assert_eq!(p.scope(), "SELECT on public.invoices");
        assert_eq!(
            p.grants("apr_0123456789abcdef0123456789abcdef"),
            [
                "GRANT USAGE ON SCHEMA \"public\" TO \"apr_0123456789abcdef0123456789abcdef\"",
                "GRANT SELECT ON TABLE \"public\".\"invoices\" TO \"apr_0123456789abcdef0123456789abcdef\"",
            ]
        );
    }

    #[test]
    fn columns_tables_and_privileges_are_listed_once_in_a_fixed_order() {
        let p = plan(json!({
            "tables": ["billing.invoices", "billing.lines", "billing.invoices", "notes"],
            "columns": ["id", "total", "id"],
            "privileges": ["update", "select"],
        }))
        .expect("plan");
        assert_eq!(
            p.scope(),
            "SELECT, UPDATE (id, total) on billing.invoices, billing.lines, public.notes"
        );
        let grants = p.grants("apr_0123456789abcdef0123456789abcdef");
        assert_eq!(grants.len(), 5, "{grants:?}");
        assert_eq!(
            grants[2],
            "GRANT SELECT (\"id\", \"total\"), UPDATE (\"id\", \"total\") ON TABLE \"billing\".\"invoices\" TO \"apr_0123456789abcdef0123456789abcdef\""
        );
        let until = p.scope_until("2026-12-04T06:00:00.999Z".parse().expect("time"));
        assert!(until.ends_with(" until 2026-12-04T06:00:00Z"), "{until}");
    }

    #[test]
    fn anything_but_plain_names_is_refused() {
        for params in [
            json!({}),
            json!([]),
            json!({"table": 1}),
            json!({"table": "a", "tables": ["b"]}),
            json!({"tables": []}),
            json!({"tables": "invoices"}),
            json!({"table": "invoices; DROP TABLE x"}),
            json!({"table": "\"invoices\""}),
            json!({"table": "invoices--"}),
            json!({"table": "a.b.c"}),
            json!({"table": ".invoices"}),
            json!({"table": "pg_catalog.pg_authid"}),
            json!({"table": "information_schema.tables"}),
            json!({"table": "pg_toast.x"}),
            json!({"table": "Invoices"}),
            json!({"table": "inv\u{043e}ices"}),
            json!({"table": "a".repeat(64)}),
            json!({"table": "invoices", "columns": ["id; --"]}),
            json!({"table": "invoices", "columns": []}),
            json!({"table": "invoices", "columns": "id"}),
            json!({"table": "invoices", "privileges": ["SELECT"]}),
            json!({"table": "invoices", "privileges": ["all"]}),
            json!({"table": "invoices", "privileges": []}),
            json!({"table": "invoices", "privileges": ["truncate"]}),
            json!({"table": "invoices", "columns": ["id"], "privileges": ["delete"]}),
            json!({"tables": vec!["t"; MAX_TABLES + 1]}),
        ] {
            assert!(
                matches!(plan(params.clone()), Err(BrokerError::Refused(_))),
                "{params}"
            );
        }
    }

    #[test]
    fn privileges_beyond_the_allowed_ones_are_refused() {
        let allowed = [Privilege::Select];
        let err = Plan::new(
            "db.export",
            &allowed,
            &json!({"table": "invoices", "privileges": ["select", "insert"]}),
        )
        .expect_err("insert is not allowed");
        assert!(err.to_string().contains("INSERT is not allowed"), "{err}");
        assert!(Plan::new("db.export", &[], &json!({"table": "invoices"})).is_err());
    }

    #[test]
    fn a_scope_too_long_to_audit_is_refused() {
        let long: Vec<String> = (0..MAX_TABLES)
            .map(|i| format!("{}.{}{i:02}", "s".repeat(40), "t".repeat(40)))
            .collect();
        let err = plan(json!({ "tables": long })).expect_err("too long");
        assert!(err.to_string().contains("too much"), "{err}");
    }
}
