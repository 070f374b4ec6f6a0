//! Cluster mode: several runtimes (separate processes) with one set of connector
//! configs, coordinated through Iggy (our test server, or the real one
//! `IGGY_TEST_ADDRESS` names). Every source runs on exactly one member; a member that
//! dies, restarts, joins or is cut off from Iggy moves sources between members without
//! losing a message.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, temp_dir, unique};
use iggy_test_server::TestTarget;
use runtime_core::cluster::partition_of;
use runtime_core::{IggyBus, IggySettings, MessageBus};

mod support;
use support::{Served, http_get, serve_api, stored_messages};

/// The clusters' rhythm here: a member asks for its partitions every 100 ms and waits
/// 1 s before it starts a source it gained.
const SYNC_INTERVAL: &str = "100ms";
const FENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The random source's messages per batch in these tests.
const BATCH: u64 = 2;

/// The tests start three or four runtimes each: one test at a time, so that two cores
/// keep up with them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster's shared configs: `sources` random sources (each to its own topic of
/// `stream`, `total` messages each) and two file sinks reading all of them.
struct Setup {
    target: TestTarget,
    dir: std::path::PathBuf,
    /// The source keys, one per coordination partition.
    sources: Vec<String>,
    stream: String,
    total: u64,
    /// The `[cluster]` section every member shares (its `member_name` aside).
    cluster: String,
}

/// `count` source keys, each on a coordination partition of its own out of `count`,
/// so that a balanced assignment spreads them over the members.
fn keys_one_per_partition(count: u32) -> Vec<String> {
    let mut keys: BTreeMap<u32, String> = BTreeMap::new();
    for n in 0.. {
        let key = format!("src{n}");
        keys.entry(partition_of(&key, count)).or_insert(key);
        if keys.len() == count as usize {
            break;
        }
    }
    keys.into_values().collect()
}

impl Setup {
    /// The sources' topics get `topic_partitions` partitions each (made here).
    async fn new(label: &str, sources: u32, total: u64, topic_partitions: u32) -> Setup {
        let target = TestTarget::from_env().await.unwrap();
        let dir = temp_dir(label);
        let stream = unique("data");
        let connectors = dir.join("connectors");
        std::fs::create_dir_all(&connectors).unwrap();
        let sources = keys_one_per_partition(sources);
        let client = iggy_connectors_tests::iggy_client(&target.address)
            .await
            .unwrap();
        for key in &sources {
            iggy_connectors_tests::create_topic(&client, &stream, key, topic_partitions)
                .await
                .unwrap();
            std::fs::write(
                connectors.join(format!("{key}.toml")),
                format!(
                    "type = \"source\"\nkey = \"{key}\"\nenabled = true\nversion = 0\nname = \"{key}\"\npath = \"{}\"\n\
                     [[streams]]\nstream = \"{stream}\"\ntopic = \"{key}\"\nschema = \"json\"\nbatch_length = {BATCH}\n\
                     [plugin_config]\ninterval = \"20ms\"\nmessages_range = [{BATCH}, {BATCH}]\nmax_count = {total}\n",
                    plugin_path("iggy_connector_random_source")
                ),
            )
            .unwrap();
        }
        let topics: Vec<String> = sources.iter().map(|key| format!("\"{key}\"")).collect();
        for sink in ["out_a", "out_b"] {
            std::fs::write(
                connectors.join(format!("{sink}.toml")),
                format!(
                    "type = \"sink\"\nkey = \"{sink}\"\nenabled = true\nversion = 0\nname = \"{sink}\"\npath = \"{}\"\n\
                     [[streams]]\nstream = \"{stream}\"\ntopics = [{}]\nschema = \"json\"\nbatch_length = 20\npoll_interval = \"5ms\"\n\
                     [plugin_config]\npath = \"{}\"\n",
                    plugin_path("iggy_connector_file_sink"),
                    topics.join(", "),
                    dir.join(format!("{sink}.jsonl")).display(),
                ),
            )
            .unwrap();
        }
        let cluster = format!(
            "[cluster]\nenabled = true\nname = \"{}\"\nstream = \"{}\"\npartitions = {}\nsync_interval = \"{SYNC_INTERVAL}\"\nfence_timeout = \"{}ms\"\n",
            unique("cluster"),
            unique("coordination"),
            sources.len(),
            FENCE_TIMEOUT.as_millis(),
        );
        Setup {
            target,
            dir,
            sources,
            stream,
            total,
            cluster,
        }
    }

    /// Starts the member `name`, reaching Iggy at `iggy` (the target's address unless a
    /// test puts something between them). Its sinks write to files of its own.
    fn start_at(&self, name: &str, iggy: &str) -> Member {
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[iggy]\naddress = \"{iggy}\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n[logging]\nsummary_interval = \"0s\"\n{}member_name = \"{name}\"\n",
                self.dir.join(format!("state-{name}")).display(),
                self.dir.join("connectors").display(),
                self.cluster,
            ),
        )
        .unwrap();
        let mut vars = Vec::new();
        for sink in ["out_a", "out_b"] {
            vars.push((
                format!(
                    "IGGY_CONNECTORS_SINK_{}_PLUGIN_CONFIG_PATH",
                    sink.to_uppercase()
                ),
                self.dir
                    .join(format!("{sink}-{name}.jsonl"))
                    .display()
                    .to_string(),
            ));
        }
        let vars: Vec<(&str, &str)> = vars
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Member {
            name: name.to_owned(),
            served: serve_api(&config, &vars),
        }
    }

    fn start(&self, name: &str) -> Member {
        self.start_at(name, &self.target.address)
    }

    /// Starts the members `names` and waits until each lists them all and every source
    /// runs on exactly one.
    async fn start_all(&self, names: &[&str]) -> Vec<Member> {
        let members: Vec<Member> = names.iter().map(|name| self.start(name)).collect();
        for member in &members {
            member
                .sees_members(names.len(), Duration::from_secs(30))
                .await;
        }
        self.placed(&members.iter().collect::<Vec<_>>(), Duration::from_secs(30))
            .await;
        members
    }

    /// Waits until Iggy holds every message of every source, at most `repeats` of a
    /// source's twice (`why` more would be wrong), and both sinks delivered them all.
    async fn all_there(&self, repeats: usize, why: &str) {
        let produced = self.produced(Duration::from_secs(90)).await;
        for (key, seqs) in &produced {
            let twice = repeated(seqs);
            assert!(
                twice <= repeats,
                "{key} produced {twice} messages twice, more than {repeats} ({why})"
            );
        }
        self.delivered(Duration::from_secs(60)).await;
    }

    /// Waits until every source runs on exactly one of `members` (their `/sources`
    /// say so); returns which member runs each.
    async fn placed(&self, members: &[&Member], within: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for member in members {
                for key in member.running_sources() {
                    runs.entry(key).or_default().push(member.name.clone());
                }
            }
            let once = self
                .sources
                .iter()
                .all(|key| runs.get(key).is_some_and(|on| on.len() == 1));
            if once {
                return runs
                    .into_iter()
                    .map(|(key, mut on)| (key, on.remove(0)))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "sources not each running on exactly one member: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until Iggy holds every message of every source, and returns, per source,
    /// the sequence numbers it holds (in topic order).
    async fn produced(&self, within: Duration) -> BTreeMap<String, Vec<u64>> {
        let bus = IggyBus::connect(&IggySettings::new(&self.target.address))
            .await
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            let mut all = BTreeMap::new();
            for key in &self.sources {
                all.insert(key.clone(), topic_seqs(&bus, &self.stream, key).await);
            }
            let complete = all.values().all(|seqs| {
                let unique: BTreeSet<u64> = seqs.iter().copied().collect();
                unique == (0..self.total).collect()
            });
            if complete {
                bus.close().await;
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "not every message reached Iggy; missing per source: {:?}",
                all.iter()
                    .map(|(key, seqs)| {
                        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
                        (key, self.total - unique.len() as u64)
                    })
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until each sink's files (one per member) hold every message of every
    /// source between them.
    async fn delivered(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let expected: BTreeSet<(String, u64)> = self
            .sources
            .iter()
            .flat_map(|key| (0..self.total).map(move |seq| (key.clone(), seq)))
            .collect();
        for sink in ["out_a", "out_b"] {
            loop {
                let mut got = BTreeSet::new();
                for entry in std::fs::read_dir(&self.dir).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    if name.starts_with(&format!("{sink}-")) {
                        got.extend(delivered_pairs(&path));
                    }
                }
                if got == expected {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sink {sink} delivered {} of {} messages",
                    got.intersection(&expected).count(),
                    expected.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The sequence numbers of the messages in `stream`/`topic`, partition by partition.
async fn topic_seqs(bus: &IggyBus, stream: &str, topic: &str) -> Vec<u64> {
    stored_messages(bus, stream, topic)
        .await
        .iter()
        .map(|message| {
            let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            value["seq"].as_u64().unwrap()
        })
        .collect()
}

/// The (source key, sequence number) of every message a file sink wrote to `path`.
fn delivered_pairs(path: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| {
            let payload = &line["payload"];
            Some((
                payload["key"].as_str()?.to_owned(),
                payload["seq"].as_u64()?,
            ))
        })
        .collect()
}

/// How many sequence numbers occur more than once.
fn repeated(seqs: &[u64]) -> usize {
    let mut seen = BTreeSet::new();
    seqs.iter().filter(|seq| !seen.insert(**seq)).count()
}

/// A running member.
struct Member {
    name: String,
    served: Served,
}

impl Member {
    /// The sources this member reports `running`.
    fn running_sources(&self) -> Vec<String> {
        let (status, body) = http_get(&self.served.address, "/sources");
        assert_eq!(status, 200, "{body}");
        let sources: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        sources
            .iter()
            .filter(|source| source["state"] == "running")
            .map(|source| source["key"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The state `/sources` reports for `key`.
    fn source_state(&self, key: &str) -> String {
        let (_, body) = http_get(&self.served.address, &format!("/sources/{key}"));
        let source: serde_json::Value = serde_json::from_str(&body).unwrap();
        source["state"].as_str().unwrap_or_default().to_owned()
    }

    /// `GET /cluster`.
    fn cluster(&self) -> serde_json::Value {
        let (status, body) = http_get(&self.served.address, "/cluster");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until this member's `/cluster` lists `count` members.
    async fn sees_members(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let view = self.cluster();
            if view["members"].as_array().map(Vec::len) == Some(count) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not see {count} members: {view}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and waits for a clean exit.
    async fn terminate(self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.served.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let mut child = self.served.child.take();
        let finished = tokio::task::spawn_blocking(move || child.wait());
        let status = tokio::time::timeout(Duration::from_secs(30), finished)
            .await
            .expect("a member stops within 30 s of SIGTERM")
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// Three members, two sources, two sinks: each source runs exactly once, `GET
/// /cluster` agrees on every member, and killing (SIGKILL) the member that runs a
/// source moves the source to another member within 10 s, which resumes from the
/// state the killed one saved in Iggy: every message reaches Iggy, and with verified
/// resume none twice; both sinks deliver every message between the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_sources_move_to_another_without_loss() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::new("cluster-kill", 2, 1_000, 1).await;
    let mut members = setup.start_all(&["m1", "m2", "m3"]).await;
    let placed = setup
        .placed(&members.iter().collect::<Vec<_>>(), Duration::from_secs(30))
        .await;
    // Every member tells the same story of who runs what, and since when, once each
    // has read the others' cards (a sync or two).
    let deadline = Instant::now() + Duration::from_secs(10);
    for member in &members {
        loop {
            let view = member.cluster();
            let told = placed.iter().all(|(key, on)| {
                view["members"].as_array().unwrap().iter().any(|entry| {
                    entry["name"] == on.as_str()
                        && entry["sources"].as_array().unwrap().iter().any(|source| {
                            source["key"] == key.as_str() && source["since_unix_ms"].is_u64()
                        })
                })
            });
            if told {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not say who runs what ({placed:?}): {view}",
                member.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let key = &setup.sources[0];
    let victim = members
        .iter()
        .position(|member| &member.name == placed.get(key).unwrap())
        .unwrap();
    let killed = members.remove(victim);
    drop(killed); // SIGKILL
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(10);
    loop {
        if members
            .iter()
            .any(|member| member.running_sources().contains(key))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{key} runs nowhere 10 s after its member was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{key} moved in {:?}", killed_at.elapsed());
    setup
        .all_there(0, "verified resume finds what the killed member stored")
        .await;
    drop(members);
}

/// A rolling restart of three members (SIGTERM, start again, on to the next once it is
/// back in the cluster) while two sources produce: nothing is lost, and a source
/// handed over by a member that stopped cleanly is produced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::new("cluster-rolling", 2, 1_500, 1).await;
    let mut members = setup.start_all(&["m1", "m2", "m3"]).await;
    for index in 0..members.len() {
        let name = members[index].name.clone();
        let stopping = members.remove(index);
        stopping.terminate().await;
        members.insert(index, setup.start(&name));
        members[index]
            .sees_members(3, Duration::from_secs(30))
            .await;
        setup
            .placed(&members.iter().collect::<Vec<_>>(), Duration::from_secs(30))
            .await;
    }
    // A member that loses a partition sees it within a round (0.1-0.2 s) and has its
    // batch done long before the gainer's wait (1 s) is over; a starved one may still
    // finish one batch after the gainer read the state.
    setup
        .all_there(BATCH as usize, "handovers by members that stopped cleanly")
        .await;
    drop(members);
}

/// Scale out: three members run four sources (one has two) and share the sinks' topic
/// partitions (four per topic), a fourth member joins and takes over sources and sink
/// partitions; every source still runs exactly once, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_takes_over_sources_without_loss() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::new("cluster-scale", 4, 1_000, 4).await;
    let mut members = setup.start_all(&["m1", "m2", "m3"]).await;
    members.push(setup.start("m4"));
    members[3].sees_members(4, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let placed = loop {
        let placed = setup
            .placed(&members.iter().collect::<Vec<_>>(), Duration::from_secs(30))
            .await;
        if placed.values().any(|on| on == "m4") {
            break placed;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth member runs no source: {placed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let on: BTreeSet<&String> = placed.values().collect();
    assert_eq!(on.len(), 4, "four sources over four members: {placed:?}");
    // Its sinks were dealt partitions too: they deliver.
    let deadline = Instant::now() + Duration::from_secs(30);
    for sink in ["out_a", "out_b"] {
        let file = setup.dir.join(format!("{sink}-m4.jsonl"));
        while delivered_pairs(&file).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the fourth member's {sink} delivers nothing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // As in the rolling restart: at most the one batch a slow loser finishes.
    setup
        .all_there(BATCH as usize, "sources moving to a member that joined")
        .await;
    drop(members);
}

/// A TCP proxy that can be cut: while cut it forwards nothing either way and keeps
/// every connection open, as a network partition does.
struct Proxy {
    address: String,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn to(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let cutting = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, cutting.clone()));
                tokio::spawn(forward(server_read, client_write, cutting.clone()));
            }
        });
        Proxy { address, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while not `cut`; while cut, reads nothing (the bytes wait in
/// the socket).
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 64 * 1024];
    loop {
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let read =
            match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buffer)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(read)) => read,
            };
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A member cut off from Iggy (a network partition: its connections stay open, no
/// byte passes) stops its source within the fencing window and answers `/ready` 503
/// saying why, and runs it again once it hears from the server again, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_iggy_stops_its_sources_within_the_fencing_window() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let setup = Setup::new("cluster-fence", 1, 400, 1).await;
    let proxy = Proxy::to(&setup.target.address).await;
    let member = setup.start_at("m1", &proxy.address);
    let key = setup.sources[0].clone();
    setup.placed(&[&member], Duration::from_secs(30)).await;
    proxy.cut();
    let cut_at = Instant::now();
    let deadline = cut_at + FENCE_TIMEOUT + Duration::from_secs(5);
    loop {
        let state = member.source_state(&key);
        if state != "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{key} still {state} {:?} after the cut",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = cut_at.elapsed();
    eprintln!("fenced {fenced_after:?} after the cut");
    // The window: `fence_timeout` from the last sync answered before the cut, then
    // `sync_interval` for the batch in flight; half a second more for a busy machine.
    assert!(
        fenced_after <= FENCE_TIMEOUT + Duration::from_millis(600),
        "fenced {fenced_after:?} after the cut; the window is {FENCE_TIMEOUT:?} and {SYNC_INTERVAL}"
    );
    // Its readiness says why it runs nothing.
    let deadline = Instant::now() + FENCE_TIMEOUT + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(&member.served.address, "/ready");
        if status == 503 && body.contains("no answer from Iggy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready while cut off: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.heal();
    setup.placed(&[&member], Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&member.served.address, "/ready");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready once healed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.produced(Duration::from_secs(60)).await;
    setup.delivered(Duration::from_secs(60)).await;
    drop(member);
}
