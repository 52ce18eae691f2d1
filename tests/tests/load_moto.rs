//! `dynamo-cdc-gen load` against moto: it creates the table with a
//! NEW_AND_OLD_IMAGES stream, writes items of every type at the asked rate,
//! exits 0 after `--duration`, and its summary matches the stream moto
//! recorded; without `--create` a missing table is an error naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use dynamo_cdc_tests::servers::{dynamodb, start_moto, stream_records};
use dynamo_cdc_tests::{Scratch, gen_binary};

const TABLE: &str = "load_orders";

fn load(url: &str, args: &[&str]) -> Output {
    Command::new(gen_binary())
        .args(["load", "--endpoint-url", url])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run dynamo-cdc-gen")
}

/// The number before `word` in `line`: `12 inserts` → 12.
fn count(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let at = words
        .iter()
        .position(|w| *w == word)
        .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number before `{word}` in {line:?}"))
}

/// Type tags of a value and everything nested in it.
fn tags(v: &AttributeValue, out: &mut BTreeSet<&'static str>) {
    let tag = match v {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        AttributeValue::L(l) => {
            l.iter().for_each(|e| tags(e, out));
            "L"
        }
        AttributeValue::M(m) => {
            m.values().for_each(|e| tags(e, out));
            "M"
        }
        _ => "other",
    };
    out.insert(tag);
}

#[test]
#[ignore = "needs moto_server; scripts/test.sh installs it and runs this"]
fn load_writes_every_type_and_its_summary_matches_the_stream() {
    let s = Scratch::new();
    let (_moto, url) = start_moto(s.path());

    // Without --create, a missing table is an error naming it and the flag.
    let missing = load(&url, &["--table", TABLE, "--rate", "50", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("`{TABLE}` does not exist")) && stderr.contains("--create"),
        "{stderr}"
    );

    let run = load(
        &url,
        &[
            "--table",
            TABLE,
            "--rate",
            "50",
            "--duration",
            "3",
            "--create",
            "--seed",
            "42",
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let expect = stdout
        .lines()
        .find(|l| l.contains("stream records to expect"))
        .unwrap_or_else(|| panic!("no expectations in {stdout}"));
    let writes = count(summary, "writes");
    let (inserts, replaces, updates, deletes) = (
        count(summary, "inserts"),
        count(summary, "replaces"),
        count(summary, "updates"),
        count(summary, "deletes"),
    );
    assert_eq!(writes, inserts + replaces + updates + deletes, "{summary}");
    // 50 writes a second for 3 s, paced by a schedule: about 150.
    assert!((140..=151).contains(&writes), "{summary}");
    assert!(
        inserts > 0 && replaces > 0 && updates > 0 && deletes > 0,
        "{summary}"
    );
    assert_eq!(count(expect, "INSERT"), inserts, "{expect}");
    assert_eq!(count(expect, "MODIFY"), replaces + updates, "{expect}");
    assert_eq!(count(expect, "REMOVE"), deletes, "{expect}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(dynamodb(&url));

    // The table it created: keys pk and sk, a NEW_AND_OLD_IMAGES stream.
    let table = runtime
        .block_on(db.describe_table().table_name(TABLE).send())
        .expect("describe the created table")
        .table
        .expect("a table description");
    let stream = table.stream_specification().expect("a stream");
    assert!(stream.stream_enabled());
    assert_eq!(
        stream.stream_view_type(),
        Some(&StreamViewType::NewAndOldImages)
    );
    let keys: Vec<&str> = table
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);

    // Items of every type are there: inserts minus deletes of them.
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = runtime
            .block_on(
                db.scan()
                    .table_name(TABLE)
                    .set_exclusive_start_key(start.take())
                    .send(),
            )
            .expect("scan");
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(items.len() as u64, inserts - deletes);
    let mut seen = BTreeSet::new();
    for item in &items {
        item.values().for_each(|v| tags(v, &mut seen));
    }
    for tag in ["S", "N", "B", "BOOL", "NULL", "L", "M", "SS", "NS", "BS"] {
        assert!(seen.contains(tag), "no {tag} among {seen:?}");
    }
    assert!(
        items.iter().any(|i| i.contains_key("expires_at")),
        "no item has a TTL"
    );

    // The stream holds what the summary announced.
    let records = runtime.block_on(stream_records(&url, TABLE));
    let mut by_event: BTreeMap<String, u64> = BTreeMap::new();
    for (_, event, _) in &records {
        *by_event.entry(event.clone()).or_default() += 1;
    }
    let got = |e: &str| by_event.get(e).copied().unwrap_or(0);
    // Exact on moto, which answers every write once; a retried write could
    // add a record, hence the margin.
    let near = |a: u64, b: u64| a.abs_diff(b) <= 2;
    assert!(near(got("INSERT"), inserts), "{by_event:?} vs {summary}");
    assert!(
        near(got("MODIFY"), replaces + updates),
        "{by_event:?} vs {summary}"
    );
    assert!(near(got("REMOVE"), deletes), "{by_event:?} vs {summary}");
}
