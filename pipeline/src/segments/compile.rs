//! Compiles a [`Segment`] to DataFusion SQL over `profiles` (alias `p`) and `event_stats`.
//!
//! No user text ever becomes SQL syntax: every value (field values, tag and event names,
//! custom field names, times, the environment) is a bound parameter (`$1`, `$2`, … with an
//! explicit `CAST`), and the only identifiers are the fixed built-in column names, quoted.
//! Every condition is two-valued (`coalesce(…, false)`), so `NOT` and `any` behave as a
//! marketer expects: a missing value never matches `eq`, and always matches `neq`.

use datafusion::common::ScalarValue;

use super::def::{Cmp, Condition, FieldOp, FieldRef, Operand, Segment, Time, TimeOp, Which};
use crate::users::fields::FieldType;

/// SQL text with `$n` placeholders and the values to bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub params: Vec<ScalarValue>,
}

impl Compiled {
    /// The SQL with every parameter written as an escaped literal (text in single quotes,
    /// quotes doubled), for engines or tools that cannot bind values (sqllogictest files,
    /// DuckDB). One pass over this module's own text, the only text that holds `$`: the
    /// literals written in are not scanned again, so a value holding `$1` stays itself.
    pub fn inline(&self) -> String {
        let mut out = String::with_capacity(self.sql.len());
        let mut rest = self.sql.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let end = i + 1 + digits;
            let param = rest[i + 1..end]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|k| self.params.get(k));
            match param {
                Some(p) => out.push_str(&literal(p)),
                None => out.push_str(&rest[i..end]),
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
}

fn literal(v: &ScalarValue) -> String {
    match v {
        ScalarValue::Utf8(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        ScalarValue::Int64(Some(n)) => n.to_string(),
        ScalarValue::Float64(Some(f)) if f.is_finite() => format!("{f:?}"),
        ScalarValue::Boolean(Some(b)) => if *b { "TRUE" } else { "FALSE" }.into(),
        _ => "NULL".into(),
    }
}

struct Builder {
    params: Vec<ScalarValue>,
    now_us: i64,
}

impl Builder {
    fn bind(&mut self, v: ScalarValue, sql_type: &str) -> String {
        self.params.push(v);
        format!("CAST(${} AS {sql_type})", self.params.len())
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(ScalarValue::Utf8(Some(s.to_string())), "VARCHAR")
    }

    fn time(&mut self, t: Time) -> String {
        self.bind(ScalarValue::Int64(Some(t.at(self.now_us))), "BIGINT")
    }

    fn now(&mut self) -> String {
        self.time(Time::Relative(0))
    }

    fn operand(&mut self, o: &Operand) -> String {
        match o {
            Operand::Text(s) => self.text(s),
            Operand::Number(n) => self.bind(ScalarValue::Float64(Some(*n)), "DOUBLE"),
            Operand::Bool(b) => self.bind(ScalarValue::Boolean(Some(*b)), "BOOLEAN"),
            Operand::Time(x) => self.time(*x),
            Operand::Many(v) => v
                .iter()
                .map(|o| self.operand(o))
                .collect::<Vec<_>>()
                .join(", "),
            Operand::None => "NULL".into(),
        }
    }

    /// The SQL expression of a field's value (datetimes as epoch microseconds).
    fn field(&mut self, f: &FieldRef, t: FieldType) -> String {
        match f {
            FieldRef::Builtin(col) => match t {
                FieldType::Datetime => format!("CAST(p.\"{col}\" AS BIGINT)"),
                FieldType::Number => format!("CAST(p.\"{col}\" AS DOUBLE)"),
                _ => format!("p.\"{col}\""),
            },
            FieldRef::Custom(name) => {
                let k = self.text(name);
                match t {
                    FieldType::Text => format!("json_get_str(p.\"fields\", {k})"),
                    FieldType::Number => format!("json_get_num(p.\"fields\", {k})"),
                    FieldType::Boolean => format!("json_get_bool(p.\"fields\", {k})"),
                    FieldType::Datetime => format!(
                        "CAST(to_timestamp_micros(json_get_str(p.\"fields\", {k})) AS BIGINT)"
                    ),
                    FieldType::List => format!("json_get(p.\"fields\", {k})"),
                }
            }
        }
    }

    fn condition(&mut self, c: &Condition) -> String {
        match c {
            Condition::Group { any, conditions } => {
                let parts: Vec<String> = conditions.iter().map(|c| self.condition(c)).collect();
                format!("({})", parts.join(if *any { " OR " } else { " AND " }))
            }
            Condition::Tag { tag, has } => {
                let v = self.text(tag);
                let e = format!("coalesce(array_has(p.\"tags\", {v}), false)");
                if *has { e } else { format!("NOT {e}") }
            }
            Condition::Field {
                field,
                field_type,
                op,
                value,
            } => self.field_condition(field, *field_type, *op, value),
            Condition::Event {
                event,
                did,
                count,
                within,
                occurrence,
            } => {
                let e = self.text(event);
                let mut sql = format!(
                    "EXISTS (SELECT 1 FROM event_stats s WHERE s.\"environment\" = p.\"environment\" AND s.\"user_id\" = p.\"user_id\" AND s.\"event_name\" = {e}"
                );
                if let Some((cmp, n)) = count {
                    let v = self.bind(ScalarValue::Int64(Some(*n)), "BIGINT");
                    sql.push_str(&format!(" AND s.\"count\" {} {v}", cmp_sql(*cmp)));
                }
                if let Some(t) = within {
                    let v = self.time(*t);
                    sql.push_str(&format!(" AND CAST(s.\"last_at\" AS BIGINT) >= {v}"));
                }
                if let Some((which, op, t)) = occurrence {
                    let col = match which {
                        Which::First => "first_at",
                        Which::Last => "last_at",
                    };
                    let x = format!("CAST(s.\"{col}\" AS BIGINT)");
                    let v = self.time(*t);
                    match op {
                        TimeOp::Before => sql.push_str(&format!(" AND {x} < {v}")),
                        TimeOp::After => sql.push_str(&format!(" AND {x} > {v}")),
                        TimeOp::Within => {
                            let now = self.now();
                            sql.push_str(&format!(" AND {x} >= {v} AND {x} <= {now}"));
                        }
                    }
                }
                sql.push(')');
                if *did { sql } else { format!("NOT {sql}") }
            }
        }
    }

    fn field_condition(
        &mut self,
        f: &FieldRef,
        t: FieldType,
        op: FieldOp,
        value: &Operand,
    ) -> String {
        let is_tags = *f == FieldRef::Builtin("tags");
        let x = if is_tags {
            "p.\"tags\"".to_string()
        } else {
            self.field(f, t)
        };
        let exists = if is_tags {
            format!("coalesce(cardinality({x}), 0) > 0")
        } else {
            format!("{x} IS NOT NULL")
        };
        let cmp = |b: &mut Builder, sym: &str| {
            let v = b.operand(value);
            format!("coalesce({x} {sym} {v}, false)")
        };
        match op {
            FieldOp::Exists => exists,
            FieldOp::NotExists => format!("NOT ({exists})"),
            FieldOp::Eq => cmp(self, "="),
            FieldOp::Neq => {
                let v = self.operand(value);
                format!("({x} IS DISTINCT FROM {v})")
            }
            FieldOp::Gt | FieldOp::After => cmp(self, ">"),
            FieldOp::Gte => cmp(self, ">="),
            FieldOp::Lt | FieldOp::Before => cmp(self, "<"),
            FieldOp::Lte => cmp(self, "<="),
            FieldOp::In => {
                let v = self.operand(value);
                format!("coalesce({x} IN ({v}), false)")
            }
            FieldOp::StartsWith => {
                let v = self.operand(value);
                format!("coalesce(starts_with({x}, {v}), false)")
            }
            FieldOp::Contains => {
                let v = self.operand(value);
                if is_tags {
                    format!("coalesce(array_has({x}, {v}), false)")
                } else if t == FieldType::List {
                    format!("coalesce(json_list_contains({x}, {v}), false)")
                } else {
                    format!("coalesce(strpos({x}, {v}) > 0, false)")
                }
            }
            FieldOp::Within => {
                let v = self.operand(value);
                let now = self.now();
                format!("coalesce({x} >= {v} AND {x} <= {now}, false)")
            }
        }
    }
}

fn cmp_sql(c: Cmp) -> &'static str {
    match c {
        Cmp::Eq => "=",
        Cmp::Neq => "<>",
        Cmp::Gt => ">",
        Cmp::Gte => ">=",
        Cmp::Lt => "<",
        Cmp::Lte => "<=",
    }
}

/// The members of `segment` in `environment` at `now_us`: `SELECT p.user_id FROM profiles p
/// WHERE …`.
pub fn compile(segment: &Segment, environment: &str, now_us: i64) -> Compiled {
    let mut b = Builder {
        params: Vec::new(),
        now_us,
    };
    let env = b.text(environment);
    let body = b.condition(&Condition::Group {
        any: segment.any,
        conditions: segment.conditions.clone(),
    });
    Compiled {
        sql: format!(
            "SELECT p.\"user_id\" FROM profiles p WHERE p.\"environment\" = {env} AND {body}"
        ),
        params: b.params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by reading the segment_def fuzz target's oracle, then confirmed by it on
    /// `{"tag": "x$1"}`: placeholders were replaced one after the other over the whole
    /// text, so `$1` inside an earlier value's literal was replaced too (`'x'default''`).
    #[test]
    fn inline_writes_values_holding_placeholders_as_they_are() {
        let c = Compiled {
            sql: "SELECT $1, $2, $10, $3".into(),
            params: (1..=10)
                .map(|i| match i {
                    2 => ScalarValue::Utf8(Some("x$1 o'brien $10".into())),
                    _ => ScalarValue::Int64(Some(i)),
                })
                .collect(),
        };
        assert_eq!(c.inline(), "SELECT 1, 'x$1 o''brien $10', 10, 3");
    }
}
