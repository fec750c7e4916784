//! `--shard K/N` and `report merge`: a fleet deployed by N CI jobs at once.

use std::collections::BTreeSet;

use crate::harness::Lab;

fn hosts_of(json: &serde_json::Value) -> BTreeSet<String> {
    json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shards_deploy_every_host_once_and_merge_into_one_report() {
    let lab = Lab::new().hosts(3).local(true).build();
    let all: BTreeSet<String> = ["host1", "host2", "host3", "local"]
        .map(String::from)
        .into();
    let count = 3;
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for k in 1..=count {
        let file = lab.root.join(format!("shard-{k}.json"));
        let shard = format!("{k}/{count}");
        let out = lab.csdeploy(&[
            "push",
            "--shard",
            &shard,
            "--format",
            "json",
            "-o",
            file.to_str().unwrap(),
        ]);
        out.assert_exit(0);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for host in hosts_of(&report) {
            assert!(seen.insert(host.clone()), "{host} deployed by two shards");
            assert_eq!(
                report["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["host"] == host.as_str())
                    .unwrap()["status"],
                "changed"
            );
        }
        // The same shard selects the same hosts every time.
        let again = lab.csdeploy(&["push", "--shard", &shard, "--check", "--format", "json"]);
        assert_eq!(
            hosts_of(&again.json()),
            hosts_of(&report),
            "shard {shard} is not stable"
        );
        files.push(file);
    }
    assert_eq!(seen, all, "the shards do not add up to the fleet");

    let mut args = vec!["report", "merge"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let merged = lab.csdeploy_raw(&args);
    merged.assert_exit(0);
    let json = merged.json();
    assert_eq!(hosts_of(&json), all);
    assert_eq!(json["command"], "push");
    assert_eq!(json["summary"]["hosts"], 4);
    assert_eq!(json["summary"]["changed"], 4);
    assert_eq!(json["summary"]["exit_code"], 0);

    // A shard given twice is refused: nothing is counted twice.
    let read = |f: &std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
    };
    let full = files
        .iter()
        .find(|f| !hosts_of(&read(f)).is_empty())
        .unwrap();
    let twice = lab.csdeploy_raw(&[
        "report",
        "merge",
        full.to_str().unwrap(),
        full.to_str().unwrap(),
    ]);
    twice.assert_exit(2);
    assert!(twice.stderr.contains("must not overlap"), "{twice}");
}

#[test]
fn a_merged_report_exits_with_the_worst_shard() {
    let lab = Lab::new().hosts(1).unreachable("dead").build();
    let a = lab.root.join("a.json");
    let b = lab.root.join("b.json");
    lab.csdeploy(&[
        "push",
        "--host",
        "host1",
        "--format",
        "json",
        "-o",
        a.to_str().unwrap(),
    ])
    .assert_exit(0);
    lab.csdeploy(&[
        "push",
        "--host",
        "dead",
        "--format",
        "json",
        "-o",
        b.to_str().unwrap(),
    ])
    .assert_exit(3);
    let merged = lab.csdeploy_raw(&["report", "merge", a.to_str().unwrap(), b.to_str().unwrap()]);
    merged.assert_exit(3);
    assert_eq!(merged.json()["summary"]["unreachable"], 1);
}

#[test]
fn bad_shards_and_reports_are_refused() {
    let lab = Lab::new().build();
    for shard in ["0/3", "4/3", "x", "1/0"] {
        let out = lab.csdeploy(&["push", "--shard", shard]);
        out.assert_exit(2);
        assert!(out.stderr.contains("K/N"), "{out}");
    }
    let junk = lab.write_file("junk.json", "{\"tests\": 1}");
    let out = lab.csdeploy_raw(&["report", "merge", junk.to_str().unwrap()]);
    out.assert_exit(2);
    assert!(out.stderr.contains("not a csdeploy JSON report"), "{out}");
}
