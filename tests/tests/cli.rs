//! The `dynamo-cdc` binary end to end on files: help, config errors, capture
//! formats, dead letters, reruns, crash leftovers and rolling.

use std::io::Write as _;
use std::process::Command;

use dynamo_cdc_core::{AttributeValue, Item, parse_item};
use dynamo_cdc_testkit::strategies::{get_records_json, stream_record_json};
use dynamo_cdc_tests::{
    Scratch, binary, dead_letters, on_one_cpu, parquet_files, read_file, read_rows,
};

fn item(json: &str) -> Item {
    parse_item(json, "test").unwrap()
}

fn keys(id: &str) -> Item {
    [("id", AttributeValue::S(id.into()))].into()
}

fn insert(seq: u128, id: &str, extra: &str) -> String {
    let new = item(&format!(r#"{{"id":{{"S":"{id}"}}{extra}}}"#));
    stream_record_json("orders", seq, "INSERT", &keys(id), None, Some(&new), false)
}

const BASE: u128 = 100_000_000_000_000_000_000;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_documents_every_flag() {
    let top = Command::new(binary()).arg("--help").output().unwrap();
    let text = stdout(&top);
    for word in ["run", "validate", "--log", "--version"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let run = Command::new(binary())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let text = stdout(&run);
    for word in ["--config", "--summary-json", "--quiet", "Exit codes"] {
        assert!(text.contains(word), "run --help lacks {word}:\n{text}");
    }
}

#[test]
fn config_errors_name_the_key_and_do_nothing() {
    let s = Scratch::new();
    s.write_capture("s.jsonl", &get_records_json(&[insert(BASE, "a", "")], None));
    let config = s.config("numbers = \"auto\"", "max_rows = 10");
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sinks.parquet") && err.contains("unknown field `max_rows`"),
        "{err}"
    );
    assert!(
        !s.parquet().exists(),
        "nothing may be written before the config is valid"
    );

    let config = s.config("numbers = \"float\"", "");
    let err = stderr(&s.run(&config));
    assert!(
        err.contains("transform.numbers") && err.contains("float"),
        "{err}"
    );

    let config = s.config("", "max_rows_per_file = 0");
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sinks.parquet.max_rows_per_file"),
        "{}",
        stderr(&out)
    );

    let validate = Command::new(binary())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(2));

    // A declared schema that does not parse is a configuration error too,
    // for `validate` as for `run`, naming the file.
    let schemas = s.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(
        schemas.join("orders.avsc"),
        r#"{"type":"record","name":"orders""#,
    )
    .unwrap();
    let config = s.config(&format!("schemas_dir = {schemas:?}"), "");
    for command in ["validate", "run"] {
        let out = Command::new(binary())
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains("orders.avsc"), "{command}: {err}");
    }
    assert!(!s.parquet().exists(), "nothing is written");
}

#[test]
fn every_capture_format_is_read() {
    let s = Scratch::new();
    // JSON Lines of pages, gzip-compressed.
    let page = get_records_json(&[insert(BASE, "gz", r#","n":{"N":"1"}"#)], Some("it"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(page.as_bytes()).unwrap();
    std::fs::write(s.capture().join("gzipped.jsonl.gz"), gz.finish().unwrap()).unwrap();
    // One pretty-printed GetRecords response, as the AWS CLI prints it.
    let pretty: serde_json::Value =
        serde_json::from_str(&get_records_json(&[insert(BASE, "pretty", "")], None)).unwrap();
    s.write_capture(
        "pretty.json",
        &serde_json::to_string_pretty(&pretty).unwrap(),
    );
    // A Lambda event without eventSourceARN: the table comes from the config.
    let mut record: serde_json::Value = serde_json::from_str(&insert(BASE, "lambda", "")).unwrap();
    record.as_object_mut().unwrap().remove("eventSourceARN");
    s.write_capture(
        "lambda.json",
        &serde_json::json!({"Records": [record]}).to_string(),
    );
    let config = s.config("", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kind = \"replay\"", "kind = \"replay\"\ntable = \"orders\"");
    std::fs::write(&config, text).unwrap();
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut ids: Vec<(String, String)> = read_rows(&s.parquet())
        .into_iter()
        .map(|r| {
            (
                r.shard,
                match &r.item["id"] {
                    AttributeValue::S(s) => s.to_string(),
                    v => panic!("{v:?}"),
                },
            )
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("gzipped", "gz"),
            ("lambda", "lambda"),
            ("pretty", "pretty")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn bad_input_is_dead_lettered_and_the_rest_flows() {
    let s = Scratch::new();
    let deep = {
        let mut v = r#"{"S":"leaf"}"#.to_owned();
        for _ in 0..33 {
            v = format!(r#"{{"M":{{"k":{v}}}}}"#);
        }
        v
    };
    let good = |n: u128| insert(BASE + n, &format!("good-{n}"), "");
    // Records that are valid but for one value, planted in place of a marker.
    let with = |n: u128, id: &str, value: &str| {
        insert(BASE + n, id, r#","x":{"S":"MARK"}"#).replace(r#"{"S":"MARK"}"#, value)
    };
    let bad_tag = with(3, "bad-tag", r#"{"X":"1"}"#);
    let digits39 = with(4, "digits", &format!(r#"{{"N":"{}"}}"#, "1".repeat(39)));
    let range = with(5, "range", r#"{"N":"1E+126"}"#);
    let nested = with(6, "deep", &deep);
    let no_keys = {
        let mut r: serde_json::Value = serde_json::from_str(&good(7)).unwrap();
        r["dynamodb"].as_object_mut().unwrap().remove("Keys");
        r.to_string()
    };
    let lines = [
        get_records_json(&[good(1), good(2)], Some("a")),
        r#"{"Records":[{"eventID":"trunc"#.to_owned(),
        "this is not json".to_owned(),
        get_records_json(&[bad_tag, digits39, range, nested, no_keys, good(8)], None),
    ];
    s.write_capture("shard-1.jsonl", &(lines.join("\n") + "\n"));
    let config = s.config("", "");
    let out = s.run(&config);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 says records were dead-lettered: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("dead-lettered: 7 this run"),
        "{}",
        stdout(&out)
    );

    let ids: Vec<String> = read_rows(&s.parquet())
        .into_iter()
        .map(|r| match &r.item["id"] {
            AttributeValue::S(s) => s.to_string(),
            v => panic!("{v:?}"),
        })
        .collect();
    assert_eq!(ids, ["good-1", "good-2", "good-8"]);

    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 7, "{letters:#?}");
    let find = |needle: &str| {
        letters
            .iter()
            .find(|l| l["error"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no dead letter mentions {needle:?}: {letters:#?}"))
    };
    let truncated = find("EOF while parsing");
    assert_eq!(truncated["line"], 2);
    assert!(
        truncated["origin"]
            .as_str()
            .unwrap()
            .ends_with("shard-1.jsonl")
    );
    assert_eq!(truncated["raw"], r#"{"Records":[{"eventID":"trunc"#);
    assert_eq!(find("not valid JSON: expected")["line"], 3);
    let tag = find("unknown type tag \"X\"");
    assert!(
        tag["error"].as_str().unwrap().contains("NewImage.x"),
        "{tag}"
    );
    assert!(
        find("39 significant digits")["error"]
            .as_str()
            .unwrap()
            .contains("NewImage.x")
    );
    assert_eq!(
        (tag["line"].as_u64(), tag["record_index"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(tag["raw"].as_str().unwrap().contains("bad-tag"));
    find("out of range");
    find("nesting deeper than 32");
    let nk = find("record without keys");
    assert_eq!(nk["record_index"], 4);
    assert_eq!(nk["sequence_number"], (BASE + 7).to_string());

    // A rerun neither writes the good rows again nor repeats the dead letters.
    let before = parquet_files(&s.parquet());
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(parquet_files(&s.parquet()), before);
    assert_eq!(dead_letters(&s.parquet()).len(), 7);
}

/// Declares `orders` with `total` as decimal(10, 2) and returns a config
/// that reads the declaration.
fn declare_total(s: &Scratch) -> std::path::PathBuf {
    std::fs::create_dir_all(s.path().join("schemas")).unwrap();
    std::fs::write(
        s.path().join("schemas/orders.avsc"),
        r#"{"type":"record","name":"orders","fields":[{"name":"id","type":"string"},
           {"name":"total","type":["null",{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}]}]}"#,
    )
    .unwrap();
    s.config(&format!("schemas_dir = {:?}", s.path().join("schemas")), "")
}

#[test]
fn values_that_do_not_fit_a_declared_schema_are_dead_lettered() {
    let s = Scratch::new();
    let lines = get_records_json(
        &[
            insert(BASE, "a", r#","total":{"N":"12.5"}"#),
            insert(BASE + 1, "b", r#","total":{"N":"1.005"}"#),
        ],
        None,
    );
    s.write_capture("s.jsonl", &lines);
    let config = declare_total(&s);
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 1);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("`total` is declared decimal(10, 2)") && error.contains("1.005"),
        "{error}"
    );
    assert!(
        letters[0]["raw"].as_str().unwrap().contains("1.005"),
        "the raw record is kept"
    );
    let rows = read_rows(&s.parquet());
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].item["total"],
        AttributeValue::N(dynamo_cdc_core::Number::parse("12.5").unwrap())
    );
    // The refused change was the shard's last: the recorded position
    // passes it, as it would a written one, so it is not read again.
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path().join("out/checkpoint.json")).unwrap())
            .unwrap();
    let positions = &checkpoint["sinks"]["parquet"]["positions"]["orders"];
    assert_eq!(
        positions.as_object().unwrap().values().collect::<Vec<_>>(),
        [&serde_json::json!((BASE + 1).to_string())],
        "{checkpoint}"
    );
}

/// Parquet never reads a MODIFY's old image, so the source leaves it
/// unread; a modify the sink refuses still goes to the dead letters with
/// that image, and a delete's old image is still its row.
#[test]
fn a_refused_modify_keeps_its_unread_old_image_in_the_dead_letter() {
    let s = Scratch::new();
    let old = item(r#"{"id":{"S":"a"},"total":{"N":"12.5"}}"#);
    let gone = item(r#"{"id":{"S":"a"},"total":{"N":"7.25"}}"#);
    let new = item(r#"{"id":{"S":"a"},"total":{"N":"1.005"}}"#);
    let lines = get_records_json(
        &[
            insert(BASE, "a", r#","total":{"N":"12.5"}"#),
            stream_record_json(
                "orders",
                BASE + 1,
                "MODIFY",
                &keys("a"),
                Some(&old),
                Some(&new),
                false,
            ),
            stream_record_json(
                "orders",
                BASE + 2,
                "REMOVE",
                &keys("a"),
                Some(&gone),
                None,
                false,
            ),
        ],
        None,
    );
    s.write_capture("s.jsonl", &lines);
    let config = declare_total(&s);
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 1);
    let raw: serde_json::Value = serde_json::from_str(letters[0]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["eventName"], "MODIFY");
    assert_eq!(
        raw["dynamodb"]["OldImage"],
        serde_json::json!({"id": {"S": "a"}, "total": {"N": "12.5"}})
    );
    let rows = read_rows(&s.parquet());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].op, "d");
    assert_eq!(
        rows[1].item["total"],
        AttributeValue::N(dynamo_cdc_core::Number::parse("7.25").unwrap())
    );
}

/// On one CPU the capture is read in the pipeline's thread instead of a
/// reader thread of its own; what is written, dead-lettered and reported
/// is the same.
#[test]
fn a_replay_on_one_cpu_writes_what_a_replay_on_several_writes() {
    let captures = |s: &Scratch| {
        for shard in 0..3u128 {
            let pages: Vec<String> = (0..4u128)
                .map(|page| {
                    let records: Vec<String> = (0..100u128)
                        .map(|i| {
                            let seq = BASE + shard * 1_000 + page * 100 + i;
                            let id = format!("s{shard}-{}", page * 100 + i);
                            if i == 50 {
                                // One record no stream sends: a dead letter.
                                r#"{"eventName":"UPSERT","dynamodb":{}}"#.to_owned()
                            } else if i % 3 == 1 {
                                let old =
                                    item(&format!(r#"{{"id":{{"S":"{id}"}},"n":{{"N":"1"}}}}"#));
                                let new = item(&format!(
                                    r#"{{"id":{{"S":"{id}"}},"n":{{"N":"{seq}"}}}}"#
                                ));
                                stream_record_json(
                                    "orders",
                                    seq,
                                    "MODIFY",
                                    &keys(&id),
                                    Some(&old),
                                    Some(&new),
                                    false,
                                )
                            } else {
                                insert(seq, &id, r#","tags":{"SS":["a","b"]}"#)
                            }
                        })
                        .collect();
                    get_records_json(&records, Some("next"))
                })
                .collect();
            s.write_capture(&format!("shard-{shard}.jsonl"), &pages.join("\n"));
        }
    };
    let several = Scratch::new();
    captures(&several);
    let config = several.config("", "");
    let out = several.run(&config);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let one = Scratch::new();
    captures(&one);
    let config = one.config("", "");
    let mut run = Command::new(binary());
    run.args(["run", "--config"])
        .arg(&config)
        .current_dir(one.path());
    let out_one = on_one_cpu(&run)
        .output()
        .expect("taskset (util-linux) runs dynamo-cdc");
    assert_eq!(out_one.status.code(), Some(3), "{}", stderr(&out_one));
    let inline = "the capture is read in the pipeline's thread";
    assert!(stderr(&out_one).contains(inline), "{}", stderr(&out_one));

    // The summary, but for times, rates and the scratch paths.
    let summary = |o: &std::process::Output| -> Vec<String> {
        stdout(o)
            .lines()
            .filter(|l| !l.contains(" finished in ") && !l.contains("rate:"))
            .map(|l| l.split(" under ").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(summary(&out_one), summary(&out));
    assert!(
        summary(&out).iter().any(|l| l.contains("1188 rows")),
        "{}",
        stdout(&out)
    );
    let rows = |s: &Scratch| {
        let mut rows: Vec<(String, String, String)> = read_rows(&s.parquet())
            .into_iter()
            .map(|r| (r.shard, r.seq, format!("{:?}", r.item)))
            .collect();
        rows.sort();
        rows
    };
    let written = rows(&several);
    assert_eq!(written.len(), 3 * 4 * 99);
    assert_eq!(rows(&one), written);
    assert_eq!(dead_letters(&one.parquet()).len(), 12);
    assert_eq!(dead_letters(&several.parquet()).len(), 12);
}

#[test]
fn rerun_writes_nothing_and_resumes_after_new_records() {
    let s = Scratch::new();
    let records: Vec<String> = (0..20)
        .map(|i| insert(BASE + i, &format!("i{i}"), ""))
        .collect();
    s.write_capture(
        "shard-1.jsonl",
        &get_records_json(&records[..10], Some("x")),
    );
    let config = s.config("", "");
    assert_eq!(s.run(&config).status.code(), Some(0));
    let first = parquet_files(&s.parquet());
    assert_eq!(first.len(), 1);
    let checkpoint: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("out/checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        checkpoint["sinks"]["parquet"]["positions"]["orders"]["shard-1"],
        (BASE + 9).to_string()
    );

    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("10 already delivered"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        parquet_files(&s.parquet()),
        first,
        "a rerun must write nothing"
    );

    // The capture grows: only the new records are written.
    let text = get_records_json(&records[..10], Some("x"))
        + "\n"
        + &get_records_json(&records[10..], None);
    s.write_capture("shard-1.jsonl", &text);
    assert_eq!(s.run(&config).status.code(), Some(0));
    let rows = read_rows(&s.parquet());
    let seqs: Vec<String> = rows.iter().map(|r| r.seq.clone()).collect();
    let expected: Vec<String> = (0..20).map(|i| (BASE + i).to_string()).collect();
    assert_eq!(seqs, expected, "every change exactly once, in order");
}

#[test]
fn crash_leftovers_are_swept_and_positions_come_from_file_names() {
    let s = Scratch::new();
    let records: Vec<String> = (0..6)
        .map(|i| insert(BASE + i, &format!("i{i}"), ""))
        .collect();
    s.write_capture("shard-1.jsonl", &get_records_json(&records, None));
    let config = s.config("", "max_rows_per_file = 3");
    assert_eq!(s.run(&config).status.code(), Some(0));
    let files = parquet_files(&s.parquet());
    assert_eq!(files.len(), 2);
    // Simulate a crash: the second file was never committed and its temp
    // file is left behind; the checkpoint file was lost too.
    let partition = files[1].parent().unwrap().to_owned();
    std::fs::rename(
        &files[1],
        partition.join(format!(
            ".shard-1_{}.4242-00000000deadbeef.parquet.inprogress",
            BASE + 3
        )),
    )
    .unwrap();
    std::fs::remove_file(s.path().join("out/checkpoint.json")).unwrap();
    let out = s.run(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 1 temp files"),
        "{}",
        stdout(&out)
    );
    let leftovers: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
        .collect();
    assert!(leftovers.is_empty());
    let seqs: Vec<String> = read_rows(&s.parquet()).into_iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (0..6).map(|i| (BASE + i).to_string()).collect::<Vec<_>>()
    );
    assert_eq!(parquet_files(&s.parquet()), files);
}

#[test]
fn files_roll_by_rows_schema_and_date() {
    let s = Scratch::new();
    let mut records: Vec<String> = (0..5)
        .map(|i| insert(BASE + i, &format!("i{i}"), r#","n":{"N":"1"}"#))
        .collect();
    // A decimal widens `n` from Int64 to a decimal string: a new file.
    records.push(insert(BASE + 5, "dec", r#","n":{"N":"1.5"}"#));
    let pages =
        get_records_json(&records[..5], Some("x")) + "\n" + &get_records_json(&records[5..], None);
    s.write_capture("shard-1.jsonl", &pages);
    let config = s.config("", "max_rows_per_file = 2");
    // Batches of one page: the widening arrives in the second batch. (Within one
    // batch all rows are built in the widest schema, so no file is needed.)
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kind = \"replay\"", "kind = \"replay\"\nbatch_size = 5");
    std::fs::write(&config, text).unwrap();
    assert_eq!(s.run(&config).status.code(), Some(0));
    let files = parquet_files(&s.parquet());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = [(0, 1), (2, 3), (4, 4), (5, 5)]
        .iter()
        .map(|(a, _)| format!("shard-1_{}.parquet", BASE + a))
        .collect();
    assert_eq!(names, expected);
    for f in &files {
        assert!(
            f.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("date=2024-"),
            "{}",
            f.display()
        );
        let batches = read_file(f);
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(rows <= 2);
    }
    let first = &read_file(&files[0])[0];
    assert_eq!(
        first.schema().field_with_name("n").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    let last = &read_file(&files[3])[0];
    assert_eq!(
        last.schema().field_with_name("n").unwrap().data_type(),
        &arrow_schema::DataType::Utf8
    );
}

#[test]
fn repeated_pages_are_skipped_and_regressions_dead_lettered() {
    let s = Scratch::new();
    let records: Vec<String> = (0..4)
        .map(|i| insert(BASE + i, &format!("i{i}"), ""))
        .collect();
    // The first page appears twice, as when a capture tool restarts; then a
    // record older than everything read, which cannot be placed.
    let older = insert(BASE - 5, "older", "");
    let pages = [
        get_records_json(&records[..2], Some("a")),
        get_records_json(&records[..2], Some("a")),
        get_records_json(&records[2..], Some("b")),
        get_records_json(&[older], None),
    ];
    s.write_capture("shard-1.jsonl", &(pages.join("\n") + "\n"));
    let out = s.run(&s.config("", ""));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 repeated in the capture"),
        "{}",
        stdout(&out)
    );
    let seqs: Vec<String> = read_rows(&s.parquet()).into_iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (0..4).map(|i| (BASE + i).to_string()).collect::<Vec<_>>()
    );
    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("stream order")
    );
    assert!(letters[0]["raw"].as_str().unwrap().contains("older"));
}

#[test]
fn bytes_that_are_not_utf8_are_dead_lettered_never_replaced() {
    let s = Scratch::new();
    // A pretty-printed capture (one document over many lines) whose second
    // document holds a byte that is not UTF-8.
    let good: serde_json::Value =
        serde_json::from_str(&get_records_json(&[insert(BASE, "good", "")], Some("a"))).unwrap();
    let mut bytes = serde_json::to_string_pretty(&good).unwrap().into_bytes();
    bytes.extend_from_slice(b"\n");
    let bad = get_records_json(&[insert(BASE + 1, "bad", r#","x":{"S":"MARK"}"#)], None);
    let mut bad = bad.into_bytes();
    let at = bad.windows(4).position(|w| w == b"MARK").unwrap();
    bad[at] = 0xE9;
    bytes.extend_from_slice(b"{\n");
    bytes.extend_from_slice(&bad[1..]);
    std::fs::write(s.capture().join("pretty.json"), bytes).unwrap();
    let out = s.run(&s.config("", ""));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = read_rows(&s.parquet());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].item["id"], AttributeValue::S("good".into()));
    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(
        letters[0]["error"].as_str().unwrap().contains("not UTF-8"),
        "{}",
        letters[0]
    );
    assert!(letters[0]["raw"].as_str().unwrap().contains("bad"));
}

#[test]
fn ttl_deletes_are_flagged_in_both_identity_spellings() {
    let s = Scratch::new();
    let old = item(r#"{"id":{"S":"a"}}"#);
    let wire = stream_record_json("orders", BASE, "REMOVE", &keys("a"), Some(&old), None, true);
    assert!(
        wire.contains("PrincipalId"),
        "GetRecords spells it PrincipalId: {wire}"
    );
    let lambda = stream_record_json(
        "orders",
        BASE + 1,
        "REMOVE",
        &keys("b"),
        Some(&old),
        None,
        true,
    )
    .replace("PrincipalId", "principalId")
    .replace("\"Type\"", "\"type\"");
    s.write_capture("shard-1.jsonl", &get_records_json(&[wire, lambda], None));
    assert_eq!(s.run(&s.config("", "")).status.code(), Some(0));
    let rows = read_rows(&s.parquet());
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.ttl_delete && r.deleted && r.op == "d")
    );
}

#[test]
fn statistics_are_kept_where_they_prune() {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let s = Scratch::new();
    let body = "long text ".repeat(200);
    let extra = format!(
        r#","name":{{"S":"x"}},"n":{{"N":"7"}},"blob":{{"B":"AQI="}},"tags":{{"SS":["a","b"]}},"doc":{{"M":{{"k":{{"S":"v"}}}}}},"body":{{"S":"{body}"}}"#
    );
    s.write_capture(
        "stats.jsonl",
        &get_records_json(&[insert(BASE, "s1", &extra)], None),
    );
    let out = s.run(&s.config("", ""));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = parquet_files(&s.parquet());
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for column in group.columns() {
        let path = column.column_path().string();
        match column
            .statistics()
            .is_some_and(|st| st.min_bytes_opt().is_some())
        {
            true => with.push(path),
            false => without.push(path),
        }
    }
    with.sort();
    without.sort();
    // JSON text, binary values, set elements and long text (2,000 bytes
    // a value here) prune nothing.
    assert_eq!(without, ["blob", "body", "doc", "tags.list.item"]);
    for column in ["id", "name", "n", "__sequence_number", "__source_ts_ms"] {
        assert!(with.contains(&column.to_owned()), "{column}: {with:?}");
    }
    // Pages carry min/max (the column index) for ordered values; text keeps
    // its row-group statistics only.
    let paged = |name: &str| {
        let column = group.columns().iter();
        let mut column = column.filter(|c| c.column_path().string() == name);
        column.next().unwrap().column_index_offset().is_some()
    };
    for column in ["n", "__sequence_number", "__source_ts_ms"] {
        assert!(paged(column), "{column} has a column index");
    }
    for column in ["id", "name", "blob", "doc", "body"] {
        assert!(!paged(column), "{column} has no column index");
    }
}

#[test]
fn a_sink_that_cannot_write_pauses_and_resumes_from_its_last_commit() {
    let s = Scratch::new();
    s.write_capture(
        "shard-1.jsonl",
        &get_records_json(&[insert(BASE, "p1", ""), insert(BASE + 1, "p2", "")], None),
    );
    // The Parquet root's parent is a file: every write fails until it
    // becomes a directory (a stand-in for a full or read-only disk).
    let blocked = s.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let config = s.path().join("blocked.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"replay\"\npath = {:?}\n\n[sinks.parquet]\npath = {:?}\n\n[checkpoint]\npath = {:?}\n",
            s.capture(),
            blocked.join("parquet"),
            s.path().join("out/checkpoint.json"),
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(s.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Unblock once the run says it paused, not after a guessed delay.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("cannot write; pausing") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "the run ended without pausing: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.contains("parquet"), "{seen}");
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir(&blocked).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("writes again"), "{rest}");
    assert!(
        !rest.contains("cannot write; pausing"),
        "an outage is logged once: {rest}"
    );
    assert_eq!(read_rows(&blocked.join("parquet")).len(), 2);
}

/// A pass that committed files and then failed is not forgotten by the
/// summary: every committed file and row is counted, and each record once
/// (read by the pass that finished, or already delivered by the one that
/// failed), however many passes the run took.
#[test]
fn the_summary_counts_what_a_failed_pass_committed_and_each_record_once() {
    let s = Scratch::new();
    // A batch of two rows of one day (one file each), then one of the
    // next day, whose partition cannot be made until the test says so.
    let next_day = BASE + 86_400_000;
    s.write_capture(
        "shard-1.jsonl",
        &format!(
            "{}\n{}\n",
            get_records_json(&[insert(BASE, "p1", ""), insert(BASE + 1, "p2", "")], None),
            get_records_json(&[insert(next_day, "p3", "")], None),
        ),
    );
    let parquet = s.path().join("out/parquet");
    let blocked = parquet.join("orders/date=2024-11-20");
    std::fs::create_dir_all(parquet.join("orders")).unwrap();
    std::fs::write(&blocked, "not a directory").unwrap();
    let config = s.path().join("partition.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"replay\"\npath = {:?}\nbatch_size = 2\n\n[sinks.parquet]\npath = {parquet:?}\nmax_rows_per_file = 1\n\n[checkpoint]\npath = {:?}\n",
            s.capture(),
            s.path().join("out/checkpoint.json"),
        ),
    )
    .unwrap();
    let summary_path = s.path().join("summary.json");
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--summary-json")
        .arg(&summary_path)
        .current_dir(s.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("cannot write; pausing") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "the run ended without pausing: {seen}");
        seen.push_str(&line);
    }
    std::fs::remove_file(&blocked).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{seen}{rest}");
    assert_eq!(read_rows(&parquet).len(), 3);
    assert_eq!(parquet_files(&parquet).len(), 3);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["sink_retries"], 1, "{summary}");
    assert_eq!(summary["files_written"], 3, "{summary}");
    assert_eq!(summary["rows_written"], 3, "{summary}");
    assert_eq!(summary["read"]["orders"]["c"], 1, "{summary}");
    assert_eq!(summary["already_delivered"], 2, "{summary}");
}

/// A declared Avro `map` (free names, values of one layout) is a Parquet
/// MAP in the Parquet sink and an Iceberg map in the Iceberg sink, and the
/// readers users query them with read it: pyarrow, DuckDB, pyiceberg and
/// Spark (the Parquet files). A map value that does not fit is dead-lettered, naming the entry.
#[test]
#[ignore = "needs Python with pyarrow, duckdb, pyiceberg and pyspark: DYNAMO_CDC_PYTHON, else .venv/bin/python (scripts/test.sh runs it)"]
fn declared_maps_are_read_as_maps_by_pyarrow_duckdb_pyiceberg_and_spark() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("schemas")).unwrap();
    std::fs::write(
        s.path().join("schemas/orders.avsc"),
        r#"{"type":"record","name":"orders","fields":[{"name":"id","type":"string"},
           {"name":"prices","type":["null",{"type":"map","values":["null","long"]}]}]}"#,
    )
    .unwrap();
    let lines = get_records_json(
        &[
            insert(
                BASE,
                "a",
                r#","prices":{"M":{"usd":{"NULL":true},"eur":{"N":"12"},"a b é":{"N":"-3"}}}"#,
            ),
            insert(BASE + 1, "b", r#","prices":{"M":{}}"#),
            insert(BASE + 2, "c", ""),
            insert(BASE + 3, "d", r#","prices":{"M":{"eur":{"N":"1.5"}}}"#),
        ],
        None,
    );
    s.write_capture("s.jsonl", &lines);
    let out_dir = s.path().join("out");
    let iceberg = format!(
        "\n[sinks.iceberg]\ncatalog = \"sql\"\ncatalog_uri = {:?}\nwarehouse = {:?}\n\
         namespace = \"cdc\"\ntable = \"{{table}}\"\n",
        format!("sqlite://{}", out_dir.join("catalog.db").display()),
        out_dir.join("warehouse"),
    );
    let config = s.config(
        &format!("schemas_dir = {:?}", s.path().join("schemas")),
        &iceberg,
    );
    let out = s.run(&config);
    assert_eq!(
        out.status.code(),
        Some(3),
        "one dead letter: {}",
        stderr(&out)
    );
    let letters = dead_letters(&s.parquet());
    assert_eq!(letters.len(), 1, "{letters:?}");
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("`prices.eur` is declared long"), "{error}");

    let report = dynamo_cdc_tests::run_python([
        "-c".as_ref(),
        MAP_READERS.as_ref(),
        s.parquet().as_os_str(),
        out_dir.join("catalog.db").as_os_str(),
        out_dir.join("warehouse").as_os_str(),
    ]);
    assert_eq!(
        report.trim(),
        "pyarrow ok\nduckdb ok\npyiceberg ok\nspark ok",
        "{report}"
    );
}

/// Reads the `prices` map of `orders` with pyarrow, DuckDB, pyiceberg and
/// Spark; arguments: the Parquet path, the sqlite catalog and the warehouse.
const MAP_READERS: &str = r#"
import glob, sys
import duckdb, pyarrow as pa, pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

parquet, catalog_db, warehouse = sys.argv[1:4]
want = {"a": [("a b é", -3), ("eur", 12), ("usd", None)], "b": [], "c": None}

def check(name, prices_type, rows):
    assert pa.types.is_map(prices_type), (name, prices_type)
    key = prices_type.key_type
    assert pa.types.is_string(key) or pa.types.is_large_string(key), (name, prices_type)
    assert prices_type.item_type == pa.int64(), (name, prices_type)
    got = {r["id"]: r["prices"] for r in rows}
    assert got == want, (name, got)
    print(name, "ok")

files = glob.glob(f"{parquet}/orders/**/*.parquet", recursive=True)
table = pa.concat_tables(pq.read_table(f) for f in files)
check("pyarrow", table.schema.field("prices").type, table.select(["id", "prices"]).to_pylist())

con = duckdb.connect()
rel = con.sql(f"SELECT id, map_keys(prices) AS k, map_values(prices) AS v, typeof(prices) AS t "
              f"FROM read_parquet({files!r}) ORDER BY id").fetchall()
got = {i: (None if k is None else list(zip(k, v))) for i, k, v, _ in rel}
assert got == want, ("duckdb", got)
assert all(t == "MAP(VARCHAR, BIGINT)" for *_, t in rel), rel
print("duckdb ok")

catalog = SqlCatalog("dynamo_cdc", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
scanned = catalog.load_table("cdc.orders").scan().to_arrow()
check("pyiceberg", scanned.schema.field("prices").type, scanned.select(["id", "prices"]).to_pylist())

from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, MapType, StringType
spark = (SparkSession.builder.master("local[1]").appName("declared-maps")
         .config("spark.ui.enabled", "false").getOrCreate())
try:
    frame = spark.read.parquet(*files)
    spark_type = frame.schema["prices"].dataType
    assert spark_type == MapType(StringType(), LongType(), True), ("spark", spark_type)
    got = {r["id"]: None if r["prices"] is None else sorted(r["prices"].items())
           for r in frame.select("id", "prices").collect()}
    assert got == want, ("spark", got)
    print("spark ok")
finally:
    spark.stop()
"#;
