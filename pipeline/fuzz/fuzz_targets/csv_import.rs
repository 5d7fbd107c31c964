//! The CSV importer (`users::import::read_file`, what `tidemark import` and
//! `POST /v1/{env}/imports` run) on any bytes, against a registry of one field per type:
//! - a file is refused as a whole with a message, or read: rows = applied + failed, at
//!   most `MAX_LISTED` problems listed, each on a line of the file (2.. its last line)
//!   and naming a column of the header when it names one;
//! - a dry run finds exactly what a real read finds;
//! - every change written is one a user could have sent: a valid user id, a declared
//!   field with a value its type accepts as it is, or a valid tag; no more users than
//!   rows applied.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::AsArray;
use libfuzzer_sys::fuzz_target;
use tidemark::users::changes::{self, MAX_TAG_BYTES, op};
use tidemark::users::fields::{self, FieldDef, FieldType};
use tidemark::users::import::{ImportOptions, MAX_LISTED, read_file};

const MAX_ID: usize = 64;

fn registry() -> BTreeMap<String, FieldDef> {
    fields::declared(&[
        ("note", FieldType::Text),
        ("score", FieldType::Number),
        ("active", FieldType::Boolean),
        ("seen", FieldType::Datetime),
        ("colors", FieldType::List),
    ])
}

fuzz_target!(|data: &[u8]| {
    let fields = registry();
    let read = |dry_run: bool| {
        let opts = ImportOptions {
            dry_run,
            max_id_len: MAX_ID,
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = Box::new(std::io::Cursor::new(data.to_vec()));
        let parsed = read_file(reader, "default", &fields, &opts, (!dry_run).then_some(tx));
        let mut batches = Vec::new();
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        (parsed, batches)
    };
    let (real, batches) = read(false);
    let (dry, _) = read(true);
    let parsed = match (real, dry) {
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(!a.to_string().is_empty());
            return;
        }
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "a dry run differs from a real read");
            a
        }
        (a, b) => panic!("dry run and real read disagree: {a:?} / {b:?}"),
    };
    assert_eq!(parsed.rows, parsed.applied + parsed.failed);
    assert!(parsed.errors.len() <= MAX_LISTED);
    assert!(parsed.errors.len() as u64 >= parsed.failed.min(MAX_LISTED as u64));
    let last_line = 1 + data.iter().filter(|b| **b == b'\n').count() as u64;
    let mut header = csv::ReaderBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(data);
    let header: Vec<String> = header
        .headers()
        .expect("an accepted file has a header")
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for e in &parsed.errors {
        assert!(
            (2..=last_line).contains(&e.line),
            "line {} outside 2..={last_line}: {e:?}",
            e.line
        );
        assert!(!e.reason.is_empty());
        if let Some(c) = &e.column {
            assert!(
                header.contains(c),
                "column {c:?} not in the header {header:?}"
            );
        }
    }
    let mut users = BTreeSet::new();
    for b in &batches {
        let col = |n: &str| {
            b.column_by_name(n)
                .expect("column")
                .as_string::<i32>()
                .clone()
        };
        let (user, o, name, value) = (col("user_id"), col("op"), col("name"), col("value"));
        for i in 0..b.num_rows() {
            let user = user.value(i);
            changes::validate_user_id(user, MAX_ID).expect("a change for a valid user id");
            users.insert(user.to_string());
            match o.value(i) {
                op::SET => {
                    let def = &fields[name.value(i)];
                    let v: serde_json::Value =
                        serde_json::from_str(value.value(i)).expect("a set value is JSON");
                    assert_eq!(
                        def.field_type.validate(&v).as_deref(),
                        Ok(value.value(i)),
                        "a set value its field would not accept as it is"
                    );
                }
                op::TAG => {
                    let t = name.value(i);
                    assert!(!t.trim().is_empty() && t.len() <= MAX_TAG_BYTES);
                    assert!(!t.chars().any(char::is_control), "tag {t:?}");
                }
                other => panic!("op {other} from an import"),
            }
        }
    }
    assert!(users.len() as u64 <= parsed.applied);
});
