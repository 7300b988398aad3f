//! The servers' own figures over a phase or a step, for the report: counters and gauges
//! scraped from each node's Prometheus `/metrics` (the names in [`SCRAPED_METRICS`]), and CPU
//! time read from `/proc/<pid>/stat` of each node and of the load generator itself, turned into
//! CPU per successful operation and cores used.
//!
//! A name that no node exports is reported as absent (`None`, "n/a"), never as 0: a server
//! that does not count something has not counted zero of it. A node whose `/metrics` does not
//! answer at both ends of a window is left out of that window's sums (`nodes_scraped` says how
//! many answered).
//!
//! Not here: knowing where the nodes are (the `shoal` binary says: for a `--dev` cluster it
//! knows each node's metrics address and pid; for others `--metrics` and `--server-pids`),
//! when to sample (the driver: at each phase's and step's boundaries), or judging the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Whether a scraped metric is a counter (reported as its increase over a window, summed over
/// nodes) or a gauge (reported as its largest value seen in the window, over nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Only goes up (a restart resets it to 0).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric the bench scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapedMetric {
    /// Its Prometheus name.
    pub name: &'static str,
    /// How it is summarised.
    pub kind: MetricKind,
}

/// Every metric the bench scrapes from the nodes: what overload protection does (requests shed,
/// with label `class` = `client` | `replica`; cancelled; expired before they were worked on,
/// by `class`), how much waits (queue depth), and hinted handoff (writes that used a fallback,
/// hints handed back, hints held). Each series (label set) is reported, and the
/// total over them.
pub const SCRAPED_METRICS: &[ScrapedMetric] = &[
    ScrapedMetric {
        name: "shoal_requests_shed_total",
        kind: MetricKind::Counter,
    },
    ScrapedMetric {
        name: "shoal_requests_cancelled_total",
        kind: MetricKind::Counter,
    },
    ScrapedMetric {
        name: "shoal_requests_expired_total",
        kind: MetricKind::Counter,
    },
    ScrapedMetric {
        name: "shoal_queue_depth",
        kind: MetricKind::Gauge,
    },
    ScrapedMetric {
        name: "shoal_hinted_writes_total",
        kind: MetricKind::Counter,
    },
    ScrapedMetric {
        name: "shoal_hints_replayed_total",
        kind: MetricKind::Counter,
    },
    ScrapedMetric {
        name: BACKLOG_GAUGE,
        kind: MetricKind::Gauge,
    },
];

/// The backlog a fault leaves for its undoing to clear: the hints the nodes hold for nodes that
/// were down (see [`backlog`]).
pub const BACKLOG_GAUGE: &str = "shoal_hints_pending_keys";

/// How long one scrape may take (a node's metrics wait up to 2 s for its node task).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest `/metrics` answer read.
const MAX_SCRAPE_BYTES: usize = 8 * 1024 * 1024;
/// The unit of the CPU times in `/proc/<pid>/stat`: USER_HZ, which the kernel fixes at 100 on
/// every architecture Shoal runs on (`getconf CLK_TCK`).
const USER_HZ: f64 = 100.0;

/// A server process the bench watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedNode {
    /// Its name in logs ("n1").
    pub name: String,
    /// Where its Prometheus `/metrics` is served.
    pub metrics: Option<SocketAddr>,
    /// Its process id, for its CPU time (it must run on this machine).
    pub pid: Option<u32>,
}

/// The servers of a run, and the load generator's own process.
#[derive(Debug, Clone)]
pub struct ServerWatch {
    nodes: Vec<WatchedNode>,
}

/// What one look at the servers saw.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken (when the scrapes were sent).
    pub at: Instant,
    /// Per watched node, in order.
    pub nodes: Vec<NodeSample>,
    /// The load generator's CPU time.
    pub client_cpu: Option<Duration>,
}

/// One node in a [`Sample`].
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    /// Its scraped metrics (`None`: not scraped, or it did not answer).
    pub metrics: Option<Scraped>,
    /// Its CPU time (user + system) so far.
    pub cpu: Option<Duration>,
}

/// The [`SCRAPED_METRICS`] found in one `/metrics` text: for each name the node exports (a
/// `# TYPE` line or a sample), its series by label set (`class="client"`; "" without labels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scraped {
    /// Name → label set → value.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The servers over one window (a phase's measured run, or one step).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerWindow {
    /// Seconds between the two samples.
    pub seconds: f64,
    /// Nodes watched.
    pub nodes: usize,
    /// Nodes whose `/metrics` answered at both ends (0 when none has a metrics address).
    pub nodes_scraped: usize,
    /// Every name of [`SCRAPED_METRICS`]: its figure, or `None` when no node exports it.
    pub metrics: BTreeMap<String, Option<MetricFigure>>,
    /// CPU seconds (user + system) of the nodes whose CPU time was read at both ends.
    pub node_cpu_seconds: Option<f64>,
    /// `node_cpu_seconds` per wall second.
    pub node_cores: Option<f64>,
    /// `node_cpu_seconds` × 10⁶ per successful operation of the window.
    pub cpu_per_op_us: Option<f64>,
    /// The load generator's CPU seconds.
    pub client_cpu_seconds: Option<f64>,
    /// The load generator's cores used.
    pub client_cores: Option<f64>,
    /// Successful operations the per-operation figure divides by.
    pub ops: u64,
}

/// One metric over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricFigure {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Counter: the increase, summed over series and nodes. Gauge: the largest value of any
    /// series on any node in the window's samples.
    pub total: f64,
    /// The same per label set.
    pub series: BTreeMap<String, f64>,
}

impl ServerWatch {
    /// Watches `nodes` (and this process).
    pub fn new(nodes: Vec<WatchedNode>) -> ServerWatch {
        ServerWatch { nodes }
    }

    /// The nodes watched.
    pub fn nodes(&self) -> &[WatchedNode] {
        &self.nodes
    }

    /// Whether any node's metrics are scraped (then gauges are sampled between boundaries).
    pub fn scrapes(&self) -> bool {
        self.nodes.iter().any(|n| n.metrics.is_some())
    }

    /// Looks at every node now: CPU times first (they are instant), then the scrapes, all at
    /// once.
    pub async fn sample(&self) -> Sample {
        let at = Instant::now();
        let client_cpu = process_cpu("self");
        let cpu: Vec<Option<Duration>> = self
            .nodes
            .iter()
            .map(|n| n.pid.and_then(|pid| process_cpu(&pid.to_string())))
            .collect();
        let mut scrapes = JoinSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(addr) = node.metrics {
                let name = node.name.clone();
                scrapes.spawn(async move {
                    let scraped = match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(addr)).await {
                        Ok(Ok(text)) => Some(Scraped::parse(&text)),
                        Ok(Err(e)) => {
                            tracing::debug!(node = %name, %addr, error = %e, "metrics scrape failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(node = %name, %addr, "metrics scrape timed out");
                            None
                        }
                    };
                    (i, scraped)
                });
            }
        }
        let mut nodes: Vec<NodeSample> = cpu
            .into_iter()
            .map(|cpu| NodeSample { metrics: None, cpu })
            .collect();
        while let Some(joined) = scrapes.join_next().await {
            if let Ok((i, scraped)) = joined
                && let Some(node) = nodes.get_mut(i)
            {
                node.metrics = scraped;
            }
        }
        Sample {
            at,
            nodes,
            client_cpu,
        }
    }
}

impl Scraped {
    /// The [`SCRAPED_METRICS`] of a Prometheus text exposition (version 0.0.4). Lines that do
    /// not parse are skipped.
    pub fn parse(text: &str) -> Scraped {
        let wanted = |name: &str| SCRAPED_METRICS.iter().any(|m| m.name == name);
        let mut metrics: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                // A declared family is exported even before its first sample.
                if let Some(name) = rest.split_whitespace().next()
                    && wanted(name)
                {
                    metrics.entry(name.to_owned()).or_default();
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, labels, value)) = sample_line(line) else {
                continue;
            };
            if wanted(name) {
                metrics
                    .entry(name.to_owned())
                    .or_default()
                    .insert(labels.to_owned(), value);
            }
        }
        Scraped { metrics }
    }
}

/// `name{labels} value [timestamp]` → (name, labels without braces, value).
fn sample_line(line: &str) -> Option<(&str, &str, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = "";
    if rest.starts_with('{') {
        // The closing brace outside any quoted label value.
        let mut quoted = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close?;
        labels = &rest[1..close];
        rest = &rest[close + 1..];
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    (!name.is_empty()).then_some((name, labels, value))
}

/// The servers over the window from `before` to `after`; `between` are the samples taken in
/// it (for the gauges' maxima; `before` and `after` count too); `ops` the window's successful
/// operations.
pub fn window(before: &Sample, after: &Sample, between: &[&Sample], ops: u64) -> ServerWindow {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
    let scraped_nodes: Vec<usize> = (0..before.nodes.len().min(after.nodes.len()))
        .filter(|&i| before.nodes[i].metrics.is_some() && after.nodes[i].metrics.is_some())
        .collect();
    let mut metrics = BTreeMap::new();
    for metric in SCRAPED_METRICS {
        let figure = match metric.kind {
            MetricKind::Counter => counter(metric.name, before, after, &scraped_nodes),
            MetricKind::Gauge => {
                let samples: Vec<&Sample> = std::iter::once(before)
                    .chain(between.iter().copied())
                    .chain(std::iter::once(after))
                    .collect();
                gauge(metric.name, &samples)
            }
        };
        metrics.insert(metric.name.to_owned(), figure);
    }
    let cpu_pairs: Vec<f64> = before
        .nodes
        .iter()
        .zip(&after.nodes)
        .filter_map(|(b, a)| Some(a.cpu?.saturating_sub(b.cpu?).as_secs_f64()))
        .collect();
    let node_cpu_seconds = (!cpu_pairs.is_empty()).then(|| cpu_pairs.iter().sum::<f64>());
    let per_wall = |cpu: f64| (seconds > 0.0).then(|| cpu / seconds);
    let client_cpu_seconds = match (before.client_cpu, after.client_cpu) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64()),
        _ => None,
    };
    ServerWindow {
        seconds,
        nodes: before.nodes.len(),
        nodes_scraped: scraped_nodes.len(),
        metrics,
        node_cpu_seconds,
        node_cores: node_cpu_seconds.and_then(per_wall),
        cpu_per_op_us: node_cpu_seconds.and_then(|cpu| (ops > 0).then(|| cpu * 1e6 / ops as f64)),
        client_cpu_seconds,
        client_cores: client_cpu_seconds.and_then(per_wall),
        ops,
    }
}

/// `name`'s value summed over series and nodes in `sample`, if every node answered (a node
/// that did not may hold some).
pub fn total_on_every_node(name: &str, sample: &Sample) -> Option<f64> {
    sample.nodes.iter().try_fold(0.0, |sum, node| {
        let metrics = node.metrics.as_ref()?;
        Some(sum + metrics.metrics.get(name).map_or(0.0, |s| s.values().sum()))
    })
}

/// The backlog [`BACKLOG_GAUGE`] over `samples` (in time order, from the fault on): its
/// largest total over the nodes that answered, that total at the last sample before `restart`,
/// and the first sample from `restart` on at which every node answered and it was 0. `None`
/// when no node exports it.
pub fn backlog(samples: &[&Sample], restart: Instant) -> Option<Backlog> {
    let exported = samples.iter().flat_map(|s| &s.nodes).any(|n| {
        n.metrics
            .as_ref()
            .is_some_and(|m| m.metrics.contains_key(BACKLOG_GAUGE))
    });
    if !exported {
        return None;
    }
    let totals: Vec<(Instant, Option<f64>)> = samples
        .iter()
        .map(|s| (s.at, total_on_every_node(BACKLOG_GAUGE, s)))
        .collect();
    // The peak over the nodes that answered: while nodes are down, the others hold the hints.
    let answered = |s: &Sample| -> f64 {
        s.nodes
            .iter()
            .filter_map(|n| n.metrics.as_ref()?.metrics.get(BACKLOG_GAUGE))
            .flat_map(|series| series.values())
            .sum()
    };
    let peak = samples.iter().map(|s| answered(s)).fold(0.0, f64::max);
    let at_restart = samples
        .iter()
        .rev()
        .find(|s| s.at < restart)
        .map(|s| answered(s));
    let after: Vec<&(Instant, Option<f64>)> =
        totals.iter().filter(|(at, _)| *at >= restart).collect();
    Some(Backlog {
        peak,
        at_restart,
        cleared: after
            .iter()
            .find(|(_, t)| *t == Some(0.0))
            .map(|(at, _)| *at),
    })
}

/// See [`backlog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// The largest total seen.
    pub peak: f64,
    /// The total over the nodes that answered at the last sample before the restart (`None`:
    /// no sample before it).
    pub at_restart: Option<f64>,
    /// When it was first 0 on every node after the restart.
    pub cleared: Option<Instant>,
}

/// A counter's increase over the nodes scraped at both ends, per series; a series that
/// appears only at the end started at 0, and one that went down was reset (a restart) and
/// counts from 0, as Prometheus's `increase` does.
fn counter(name: &str, before: &Sample, after: &Sample, nodes: &[usize]) -> Option<MetricFigure> {
    let mut series: BTreeMap<String, f64> = BTreeMap::new();
    let mut exported = false;
    for &i in nodes {
        let (Some(b), Some(a)) = (&before.nodes[i].metrics, &after.nodes[i].metrics) else {
            continue;
        };
        let Some(a) = a.metrics.get(name) else {
            continue;
        };
        exported = true;
        let b = b.metrics.get(name);
        for (labels, &end) in a {
            let start = b.and_then(|b| b.get(labels)).copied().unwrap_or(0.0);
            let increase = if end >= start { end - start } else { end };
            *series.entry(labels.clone()).or_default() += increase;
        }
    }
    exported.then(|| MetricFigure {
        kind: MetricKind::Counter,
        total: series.values().sum(),
        series,
    })
}

/// A gauge's largest value per series over every node of every sample.
fn gauge(name: &str, samples: &[&Sample]) -> Option<MetricFigure> {
    let mut series: BTreeMap<String, f64> = BTreeMap::new();
    let mut exported = false;
    for node in samples.iter().flat_map(|s| &s.nodes) {
        let Some(found) = node.metrics.as_ref().and_then(|m| m.metrics.get(name)) else {
            continue;
        };
        exported = true;
        for (labels, &value) in found {
            let top = series.entry(labels.clone()).or_insert(value);
            *top = top.max(value);
        }
    }
    exported.then(|| MetricFigure {
        kind: MetricKind::Gauge,
        total: series.values().copied().fold(0.0, f64::max),
        series,
    })
}

/// `GET /metrics` over HTTP/1.1 with `Connection: close`: the body of a 200 answer.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_SCRAPE_BYTES as u64)
        .read_to_end(&mut answer)
        .await?;
    let text = String::from_utf8_lossy(&answer);
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of the HTTP head"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(bad(&format!("HTTP status {status:?}")));
    }
    Ok(body.to_owned())
}

/// User + system CPU time of process `pid` (or `self`), from `/proc/<pid>/stat`; `None` when
/// it cannot be read (not Linux, the process is gone).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_of_stat(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself: fields are counted after the
/// last `)`.
pub(crate) fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name come field 3 (state) onwards: utime is field 14, index 11 here.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let total = ticks(11)?.checked_add(ticks(12)?)?;
    Some(Duration::from_secs_f64(total as f64 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP shoal_requests_shed_total Requests refused before any work.
# TYPE shoal_requests_shed_total counter
shoal_requests_shed_total{class="client"} 10
shoal_requests_shed_total{class="replica"} 0
# TYPE shoal_queue_depth gauge
shoal_queue_depth 3
# TYPE shoal_requests_total counter
shoal_requests_total{op="get",outcome="ok"} 1000
"#;

    const AFTER: &str = r#"# TYPE shoal_requests_shed_total counter
shoal_requests_shed_total{class="client"} 25
shoal_requests_shed_total{class="replica"} 1
# TYPE shoal_queue_depth gauge
shoal_queue_depth 7
# TYPE shoal_requests_expired_total counter
shoal_requests_expired_total{class="client"} 4
shoal_requests_total{op="get",outcome="ok"} 5000
"#;

    fn sample(at: Instant, texts: &[Option<&str>], cpu_s: &[u64]) -> Sample {
        Sample {
            at,
            nodes: texts
                .iter()
                .zip(cpu_s)
                .map(|(text, &cpu)| NodeSample {
                    metrics: text.map(Scraped::parse),
                    cpu: Some(Duration::from_secs(cpu)),
                })
                .collect(),
            client_cpu: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn a_backlog_is_cleared_only_when_every_node_answers_zero() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let pending = |n: u32| {
            format!("# TYPE shoal_hints_pending_keys gauge\nshoal_hints_pending_keys {n}\n")
        };
        let (p0, p40, p25) = (pending(0), pending(40), pending(25));
        let samples = [
            // The fault: two nodes down, the third holds hints for them.
            sample(at(0), &[None, None, Some(&p40)], &[0, 0, 0]),
            // The restart at 1 s: the restarted nodes do not answer yet; 0 here proves nothing.
            sample(at(1), &[None, Some(&p0), Some(&p25)], &[0, 0, 0]),
            sample(at(2), &[None, Some(&p0), Some(&p0)], &[0, 0, 0]),
            sample(at(3), &[Some(&p0), Some(&p0), Some(&p0)], &[0, 0, 0]),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let b = backlog(&refs, at(1)).unwrap();
        assert_eq!(b.peak, 40.0);
        assert_eq!(b.at_restart, Some(40.0), "held by the node that answered");
        assert_eq!(b.cleared, Some(at(3)));
        let b = backlog(&refs[..3], at(1)).unwrap();
        assert_eq!(b.cleared, None, "never 0 on every node");
        // A server that does not export it has no backlog, not an empty one.
        let plain = [sample(at(0), &[Some(BEFORE)], &[0])];
        assert_eq!(backlog(&plain.iter().collect::<Vec<_>>(), at(0)), None);
    }

    #[test]
    fn scraped_counters_become_increases_summed_over_nodes_and_absent_names_stay_absent() {
        let t0 = Instant::now();
        let before = sample(t0, &[Some(BEFORE), Some(BEFORE)], &[10, 20]);
        let middle = sample(
            t0 + Duration::from_secs(1),
            &[
                Some(AFTER),
                Some("# TYPE shoal_queue_depth gauge\nshoal_queue_depth 40\n"),
            ],
            &[11, 21],
        );
        let after = sample(
            t0 + Duration::from_secs(2),
            &[Some(AFTER), Some(AFTER)],
            &[12, 23],
        );
        let w = window(&before, &after, &[&middle], 5_000);
        let shed = w.metrics["shoal_requests_shed_total"].as_ref().unwrap();
        assert_eq!(shed.kind, MetricKind::Counter);
        assert_eq!(shed.series[r#"class="client""#], 30.0, "15 on each node");
        assert_eq!(shed.series[r#"class="replica""#], 2.0);
        assert_eq!(shed.total, 32.0);
        // Exported only at the end: counted from 0.
        let expired = w.metrics["shoal_requests_expired_total"].as_ref().unwrap();
        assert_eq!(expired.total, 8.0);
        // Nobody exports it: absent, not 0.
        assert_eq!(w.metrics["shoal_requests_cancelled_total"], None);
        // The gauge's largest value in any sample of the window, on any node.
        let depth = w.metrics["shoal_queue_depth"].as_ref().unwrap();
        assert_eq!((depth.kind, depth.total), (MetricKind::Gauge, 40.0));
        // Names outside the list are not kept.
        assert!(!w.metrics.contains_key("shoal_requests_total"));
        assert_eq!(w.nodes_scraped, 2);
        assert_eq!(w.node_cpu_seconds, Some(5.0));
        assert_eq!(w.node_cores, Some(2.5));
        assert_eq!(w.cpu_per_op_us, Some(1000.0));
        assert_eq!(w.client_cpu_seconds, Some(0.0));
    }

    #[test]
    fn a_node_that_did_not_answer_is_left_out_and_a_reset_counter_counts_from_zero() {
        let t0 = Instant::now();
        let restarted = "shoal_requests_shed_total{class=\"client\"} 5\n";
        let before = sample(t0, &[Some(BEFORE), Some(BEFORE)], &[0, 0]);
        let after = sample(
            t0 + Duration::from_secs(1),
            &[Some(restarted), None],
            &[0, 0],
        );
        let w = window(&before, &after, &[], 0);
        assert_eq!(w.nodes_scraped, 1);
        let shed = w.metrics["shoal_requests_shed_total"].as_ref().unwrap();
        assert_eq!(shed.total, 5.0);
        assert_eq!(w.cpu_per_op_us, None, "no operation to divide by");
        // No node scraped at all: every name absent.
        let none = sample(t0, &[None], &[0]);
        let w = window(&none, &none, &[], 1);
        assert!(w.metrics.values().all(Option::is_none), "{w:?}");
    }

    #[test]
    fn sample_lines_parse_with_quoted_braces_and_timestamps() {
        assert_eq!(
            sample_line(r#"shoal_queue_depth{queue="a}\"b",x="1"} 12 1700000000"#),
            Some(("shoal_queue_depth", r#"queue="a}\"b",x="1""#, 12.0))
        );
        assert_eq!(
            sample_line("shoal_queue_depth 2.5"),
            Some(("shoal_queue_depth", "", 2.5))
        );
        assert_eq!(sample_line("shoal_queue_depth{a=\"1\" 3"), None);
        assert_eq!(sample_line("shoal_queue_depth"), None);
        assert_eq!(sample_line("shoal_queue_depth x"), None);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_of_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_of_stat("garbage"), None);
        // This process can read its own.
        if cfg!(target_os = "linux") {
            assert!(process_cpu("self").is_some());
        }
    }
}
