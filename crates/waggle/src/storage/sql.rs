//! A statement and its bind values, written once and rendered in either backend's
//! dialect: SQLite numbers its parameters `?`, PostgreSQL `$1, $2, …`. Statements the two
//! write alike are built here; where the dialects or the schemas really differ (claims,
//! batched writes, where a log's event fields live), each backend writes its own.

use super::rows::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// SQL text with its parameters, in order.
#[derive(Debug, Clone)]
pub(super) struct Sql {
    dialect: Dialect,
    text: String,
    args: Vec<Value>,
}

impl Sql {
    pub fn new(dialect: Dialect, text: impl Into<String>) -> Self {
        Self {
            dialect,
            text: text.into(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a parameter, bound to `value`.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// Appends `(?, ?, …)` bound to `values`.
    pub fn bind_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")")
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn args(&self) -> &[Value] {
        &self.args
    }
}

/// `INSERT INTO table (columns) VALUES (…)`, bound to `values` in the columns' order.
pub(super) fn insert(dialect: Dialect, table: &str, columns: &str, values: Vec<Value>) -> Sql {
    debug_assert_eq!(
        columns.split(',').count(),
        values.len(),
        "{table}: {columns}"
    );
    let mut sql = Sql::new(dialect, format!("INSERT INTO {table} ({columns}) VALUES "));
    sql.bind_list(values);
    sql
}

/// `UPDATE table SET column = value, … WHERE id = … AND org_id = … RETURNING returning`:
/// the changed columns of one row of an organization's.
pub(super) fn update(
    dialect: Dialect,
    table: &str,
    set: Vec<(&str, Value)>,
    id: Value,
    org: Value,
    returning: &str,
) -> Sql {
    let mut sql = Sql::new(dialect, format!("UPDATE {table} SET id = id"));
    for (column, value) in set {
        sql.push(", ").push(column).push(" = ").bind(value);
    }
    sql.push(" WHERE id = ")
        .bind(id)
        .push(" AND org_id = ")
        .bind(org);
    sql.push(" RETURNING ").push(returning);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_in_each_dialect() {
        let build = |dialect| {
            let mut sql = Sql::new(dialect, "SELECT 1 WHERE a = ");
            sql.bind(1i64).push(" AND b IN ");
            sql.bind_list([Value::from("x"), Value::from("y")]);
            sql.text().to_owned()
        };
        assert_eq!(
            build(Dialect::Sqlite),
            "SELECT 1 WHERE a = ? AND b IN (?, ?)"
        );
        assert_eq!(
            build(Dialect::Postgres),
            "SELECT 1 WHERE a = $1 AND b IN ($2, $3)"
        );
    }
}
