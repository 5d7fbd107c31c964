//! Problems with what a user sent, listed all at once (every problem of a batch or a
//! definition with its index and field), and the error of a write that validates first.
//!
//! The HTTP API turns them into one 400 body (`server::error::ApiError::problems`);
//! the CLI prints them one a line.

use serde::Serialize;

use crate::Error;

/// At most this many problems are listed in one response.
pub const MAX_PROBLEMS: usize = 1000;

/// One problem with one item of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The item (event, update) at fault; 0 where the input is one document.
    pub index: usize,
    /// The field at fault; `None` when the item as a whole is.
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    /// A problem with `field` of a single document.
    pub fn field(field: &str, message: impl Into<String>) -> Problem {
        Problem {
            index: 0,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// `field: message`, or the message alone.
    pub fn line(&self) -> String {
        match &self.field {
            Some(f) => format!("{f}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// A JSON object and the problems found with its keys.
pub type Object<'a> = (&'a serde_json::Map<String, serde_json::Value>, Vec<Problem>);

/// `input` as a JSON object whose keys are all in `fields`: the object, and a problem for
/// each unknown key (named by it); `Err` when `input` is not an object at all.
pub fn object_of<'a>(
    input: &'a serde_json::Value,
    fields: &[&str],
) -> Result<Object<'a>, Vec<Problem>> {
    let Some(obj) = input.as_object() else {
        return Err(vec![Problem::field("(body)", "must be a JSON object")]);
    };
    let problems = obj
        .keys()
        .filter(|key| !fields.contains(&key.as_str()))
        .map(|key| {
            let expected = fields.join(", ");
            Problem::field(key, format!("unknown field; expected one of {expected}"))
        })
        .collect();
    Ok((obj, problems))
}

/// What was validated: names the error code and the sentence that sums the problems up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Events,
    Update,
    Segment,
    Webhook,
    Export,
    Flow,
    Start,
}

impl Subject {
    /// The `error` code of the 400 body.
    pub fn code(self) -> &'static str {
        match self {
            Subject::Events => "invalid_events",
            Subject::Update => "invalid_update",
            Subject::Segment => "invalid_segment",
            Subject::Webhook => "invalid_webhook",
            Subject::Export => "invalid_export",
            Subject::Flow => "invalid_flow",
            Subject::Start => "invalid_start",
        }
    }

    /// One sentence: how many problems, and what became of the input.
    pub fn summary(self, total: usize) -> String {
        match self {
            Subject::Events => format!("{total} problem(s) in the batch; nothing was stored"),
            Subject::Update => format!("{total} problem(s); nothing was written"),
            Subject::Segment => format!("the segment definition has {total} problem(s)"),
            Subject::Webhook => format!("the webhook subscription has {total} problem(s)"),
            Subject::Export => format!("the export has {total} problem(s)"),
            Subject::Flow => format!("the flow has {total} problem(s); nothing was saved"),
            Subject::Start => format!("{total} problem(s) with the start; no run was started"),
        }
    }

    /// The summary and one indented line a problem (the CLI's message).
    pub fn listing(self, problems: &[Problem]) -> String {
        let mut out = format!("{}:", self.summary(problems.len()));
        for p in problems {
            out.push_str("\n  ");
            out.push_str(&p.line());
        }
        out
    }
}

/// Why a validated write was refused.
#[derive(Debug)]
pub enum WriteError {
    /// The input is invalid: every problem found, nothing was written.
    Invalid(Vec<Problem>),
    Other(Error),
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        WriteError::Other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_name_their_unknown_keys() {
        let input = serde_json::json!({"url": "x", "urll": "y"});
        let (obj, problems) = object_of(&input, &["url", "method"]).expect("an object");
        assert_eq!(obj.len(), 2);
        assert_eq!(
            problems,
            vec![Problem::field(
                "urll",
                "unknown field; expected one of url, method"
            )]
        );
        let e = object_of(&serde_json::json!([1]), &["url"]).expect_err("not an object");
        assert_eq!(e[0].line(), "(body): must be a JSON object");
    }

    #[test]
    fn lines_name_the_field() {
        assert_eq!(
            Problem::field("url", "is required").line(),
            "url: is required"
        );
        let whole = Problem {
            index: 3,
            field: None,
            message: "not an object".into(),
        };
        assert_eq!(whole.line(), "not an object");
        assert_eq!(
            Subject::Export.listing(&[Problem::field("to", "is required"), whole]),
            "the export has 2 problem(s):\n  to: is required\n  not an object"
        );
        assert_eq!(Subject::Segment.code(), "invalid_segment");
    }
}
