//! The tables the comparison prints, as Markdown so they paste into
//! docs/performance.md as they are.

use crate::PeerKind;
use crate::ceiling::Parser;
use crate::measure::Cost;

/// The ceiling of the `vs ceiling` column, as it has always been.
const CEILING: Parser = Parser::SerdeJson;

/// One contender on one input.
pub(crate) struct Row {
    pub(crate) who: &'static str,
    /// `parquet`, `kafka`, `both`, or empty for a ceiling.
    pub(crate) output: &'static str,
    pub(crate) cost: Cost,
}

impl Row {
    pub(crate) fn new(who: &'static str, output: &'static str, cost: Cost) -> Self {
        Row { who, output, cost }
    }
}

/// Every contender on one input, and what the output checks said.
pub(crate) struct Table {
    pub(crate) input: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) rows: Vec<Row>,
    pub(crate) checks: Vec<String>,
}

impl Table {
    fn per_cpu_s(&self, cost: &Cost) -> f64 {
        self.records as f64 / cost.cpu_s
    }

    fn find(&self, who: &str, output: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.who == who && r.output == output)
    }

    /// dynamo-cdc's speed over `who`'s on the same output (or a ceiling's).
    fn ratio(&self, output: &str, who: &str, their_output: &str) -> Option<f64> {
        let ours = self.find("dynamo-cdc", output)?;
        let theirs = self.find(who, their_output)?;
        Some(theirs.cost.cpu_s / ours.cost.cpu_s)
    }

    /// The peers measured on this input, in [`PeerKind::ALL`]'s order: one
    /// ratio column each.
    fn peers(&self) -> Vec<PeerKind> {
        PeerKind::ALL
            .into_iter()
            .filter(|k| self.rows.iter().any(|r| r.who == k.label()))
            .collect()
    }

    /// Of `kinds` (named by `label`), the one that spent the least CPU on
    /// `output`.
    fn fastest<K: Copy>(
        &self,
        kinds: impl IntoIterator<Item = K>,
        label: fn(K) -> &'static str,
        output: &str,
    ) -> Option<K> {
        kinds
            .into_iter()
            .filter_map(|k| Some((k, self.find(label(k), output)?.cost.cpu_s)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k)
    }

    /// The peer that spent the least CPU writing `output`.
    fn fastest_peer(&self, output: &str) -> Option<PeerKind> {
        self.fastest(self.peers(), PeerKind::label, output)
    }

    /// The faster ceiling: the nearer limit, so that no one parser's
    /// slowness flatters the share of it.
    fn fastest_ceiling(&self) -> Option<Parser> {
        self.fastest(Parser::ALL, Parser::label, "")
    }

    pub(crate) fn print(&self) {
        let peers = self.peers();
        let fastest_ceiling = self.fastest_ceiling().map_or("", Parser::label);
        println!("\n## {}\n", self.input);
        let headings: String = peers.iter().map(|k| format!(" {} |", k.column())).collect();
        println!(
            "| contender | output | records/s per core | MB/s | CPU s per 1M changes | peak RSS MiB |{headings} vs ceiling | vs fastest ceiling |"
        );
        println!(
            "|---|---|---:|---:|---:|---:|{}---:|---:|",
            "---:|".repeat(peers.len())
        );
        for row in &self.rows {
            // The ratios are dynamo-cdc's; other rows leave them empty.
            let ratio = |who: &str, their_output: &str, unit: &str| {
                let r = (row.who == "dynamo-cdc")
                    .then(|| self.ratio(row.output, who, their_output))
                    .flatten();
                r.map_or(String::from("—"), |r| format!("{r:.2}{unit}"))
            };
            let vs_peers: String = peers
                .iter()
                .map(|k| format!(" {} |", ratio(k.label(), row.output, "×")))
                .collect();
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.2} | {:.0} |{vs_peers} {} | {} |",
                row.who,
                if row.output.is_empty() {
                    "—"
                } else {
                    row.output
                },
                self.per_cpu_s(&row.cost),
                self.bytes as f64 / 1e6 / row.cost.cpu_s,
                row.cost.cpu_s * 1e6 / self.records as f64,
                row.cost.max_rss_kib as f64 / 1024.0,
                ratio(CEILING.label(), "", ""),
                ratio(fastest_ceiling, "", ""),
            );
        }
        for check in &self.checks {
            println!("\n    {check}");
        }
    }

    /// This input's targets (see [`print_targets`]), each printed as a
    /// line with the figure measured and whether it is met.
    fn print_own_targets(&self) {
        let peer = PeerKind::Python.label();
        let label = self.input.split_whitespace().next().unwrap_or("");
        let line = |what: &str, got: Option<f64>, want: f64, more_is_better: bool| {
            let Some(got) = got else {
                println!("- {label} {what}: not measured");
                return;
            };
            let met = if more_is_better {
                got >= want
            } else {
                got <= want
            };
            println!(
                "- {label} {what}: {got:.2} (target {} {want}) {}",
                if more_is_better { "≥" } else { "≤" },
                if met { "met" } else { "MISSED" }
            );
        };
        let vs_peer = |output: &str| self.ratio(output, peer, output);
        match label {
            "F1" => {
                line("replay -> Parquet vs peer", vs_peer("parquet"), 12.0, true);
                line(
                    "replay -> Parquet vs lean Python peer",
                    self.ratio("parquet", PeerKind::PythonLean.label(), "parquet"),
                    12.0,
                    true,
                );
                // Against whichever peer is quickest here, so that no one
                // peer's slowness flatters the ratio.
                let fastest = self.fastest_peer("parquet");
                line(
                    &format!(
                        "replay -> Parquet vs the fastest peer ({})",
                        fastest.map_or("none measured", PeerKind::label)
                    ),
                    fastest.and_then(|k| self.ratio("parquet", k.label(), "parquet")),
                    10.0,
                    true,
                );
                line(
                    "replay -> Parquet vs serde_json ceiling",
                    self.ratio("parquet", CEILING.label(), ""),
                    0.6,
                    true,
                );
                let fastest = self.fastest_ceiling();
                line(
                    &format!(
                        "replay -> Parquet vs the faster ceiling ({})",
                        fastest.map_or("none measured", Parser::label)
                    ),
                    fastest.and_then(|p| self.ratio("parquet", p.label(), "")),
                    0.6,
                    true,
                );
                line("replay -> Kafka Avro vs peer", vs_peer("kafka"), 12.0, true);
                line("replay -> both vs peer", vs_peer("both"), 10.0, true);
                for output in ["parquet", "kafka", "both"] {
                    let rss = self.find("dynamo-cdc", output).zip(self.find(peer, output));
                    line(
                        &format!("peak RSS {output}, dynamo-cdc / peer"),
                        rss.map(|(o, p)| o.cost.max_rss_kib as f64 / p.cost.max_rss_kib as f64),
                        0.5,
                        false,
                    );
                }
            }
            "F2" | "F4" => line("replay -> Kafka Avro vs peer", vs_peer("kafka"), 10.0, true),
            "F3" => {
                for output in ["parquet", "kafka", "both"] {
                    line(
                        &format!("replay -> {output} vs peer"),
                        vs_peer(output),
                        4.0,
                        true,
                    );
                }
                for output in ["parquet", "kafka", "both"] {
                    line(
                        &format!("peak RSS {output}, MiB"),
                        self.find("dynamo-cdc", output)
                            .map(|r| r.cost.max_rss_kib as f64 / 1024.0),
                        100.0,
                        false,
                    );
                }
            }
            _ => {}
        }
    }
}

/// The release targets, on whichever inputs were measured: F1 against
/// every peer and both ceilings, the Kafka path on F2 and F4, speed and
/// memory on F3.
pub(crate) fn print_targets(tables: &[Table]) {
    println!("\n## Targets\n");
    for table in tables {
        table.print_own_targets();
    }
}

/// The machine the figures come from.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GiB", kb as f64 / (1 << 20) as f64)
        });
    let pinned = if crate::measure::can_pin() {
        "every contender pinned to CPU 0 with taskset"
    } else {
        "taskset missing: contenders not pinned"
    };
    format!(
        "Machine: {model}, {cores} cores{memory}; {pinned}; CPU time is user + system of the contender's process."
    )
}

/// Two sinks side by side on one input (records/s per core, CPU per
/// million changes, peak RSS), then the second's CPU per change as a ratio
/// of the first's against `target`.
pub(crate) fn print_sink_pair(
    records: u64,
    names: [&str; 2],
    pair: &crate::measure::Paired,
    costs_what: &str,
    target: f64,
) {
    println!("| sink | records/s per core | CPU s per 1M changes | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    for (name, cost) in names.iter().zip([&pair.first, &pair.second]) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} |",
            records as f64 / cost.cpu_s,
            cost.cpu_s * 1e6 / records as f64,
            cost.max_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "\n{costs_what} costs {:.2}× the {}'s CPU per change, the median of the rounds' ratios ({:.2}× between the medians above; target: at most {target}×).",
        pair.ratio,
        names[0],
        pair.second.cpu_s / pair.first.cpu_s,
    );
}
