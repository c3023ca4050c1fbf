//! Conformance with third-party clients: paho-mqtt (Python, `tests/clients/conformance.py`)
//! and Debian's `mosquitto_pub`/`mosquitto_sub`, run against any broker at an address.
//!
//! [`paho_suite`] runs the Python script for one protocol version and asserts that every
//! case it printed (one JSON line each) passed; the script asserts the exact outcomes
//! itself. [`mosquitto_clients_suite`] drives the command-line clients from here and compares
//! their `-F` output lines exactly. Both are `async` so a test that runs the broker
//! in-process keeps its runtime free: the clients run on blocking threads. A missing client
//! is a failure that says what to install, never a skip: `scripts/test` installs them
//! (paho-mqtt in a venv at `target/pyenv`, the clients from Debian's `mosquitto-clients`).
//!
//! [`reference_mosquitto`] validates both suites against Mosquitto itself, started on a free
//! port with anonymous access and an ACL user (dynamic-security plugin) that may not touch
//! `secret/#`. What Mosquitto 2.0.11 does where brokers differ (the reference run prints
//! it): PUBACK 0x10 for a PUBLISH without subscribers; UNSUBACK 0x11 for an unknown
//! filter; one copy per overlapping subscription for 5.0 clients but one copy at the QoS of
//! one of them (not the highest, against §3.3.5-1) for 3.1.1 clients; no DISCONNECT 0x8E to
//! a taken-over 5.0 connection (against §3.1.4-3), only the close; shared subscriptions
//! round-robin (10/10/10 of 30); Message Expiry Interval forwarded lowered by the time
//! queued; a client's PUBLISH to `$conf/...` accepted and routed, to `$SYS/...`
//! acknowledged and dropped; PUBACK 0x87 (5.0) and a plain PUBACK (3.1.1) for a denied
//! PUBLISH, the connection kept.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use testkit::TempDir;

/// How long one expected line or process may take before the case fails.
const WAIT: Duration = Duration::from_secs(10);

/// The MQTT protocol version a suite speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0.
    V5,
}

impl Version {
    fn script_arg(self) -> &'static str {
        match self {
            Version::V311 => "311",
            Version::V5 => "5",
        }
    }

    fn mosquitto_arg(self) -> &'static str {
        match self {
            Version::V311 => "mqttv311",
            Version::V5 => "mqttv5",
        }
    }
}

/// A user the broker knows who may not subscribe or publish to `denied_topic`; the ACL
/// cases run only when the broker under test has one.
#[derive(Debug, Clone)]
pub struct AclUser {
    /// User name sent in CONNECT.
    pub user: String,
    /// Its password.
    pub password: String,
    /// A topic name (no wildcards) this user may neither read nor write.
    pub denied_topic: String,
}

/// The broker a suite runs against and what it is allowed to get wrong.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Where it listens for plain MQTT.
    pub addr: SocketAddr,
    /// Enables the ACL-denial cases.
    pub acl: Option<AclUser>,
    /// Departures from the specification accepted for this broker, by the names
    /// `conformance.py --tolerate` knows; each tolerated case says so in its detail.
    pub tolerate: &'static [&'static str],
}

/// One case's outcome as `conformance.py` printed it.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name (`qos2`, `takeover`, ...).
    pub case: String,
    /// `"311"` or `"5"`.
    pub version: String,
    /// Whether every expectation held.
    pub ok: bool,
    /// The failure, or what the broker chose where the specification lets it choose.
    pub detail: String,
}

/// Runs every paho-mqtt case for `version` against `broker`; panics, printing every case's
/// line and the script's stderr, unless all passed. Returns the cases for their details.
pub async fn paho_suite(broker: &Broker, version: Version) -> Vec<CaseResult> {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || run_paho(&broker, version))
        .await
        .expect("the paho suite's thread panicked or was cancelled")
}

fn run_paho(broker: &Broker, version: Version) -> Vec<CaseResult> {
    let python = testkit::paho::python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/conformance.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--host", &broker.addr.ip().to_string()])
        .args(["--port", &broker.addr.port().to_string()])
        .args(["--version", version.script_arg()]);
    for deviation in broker.tolerate {
        cmd.args(["--tolerate", deviation]);
    }
    if let Some(acl) = &broker.acl {
        cmd.args(["--acl-user", &acl.user])
            .args(["--acl-password", &acl.password])
            .args(["--denied-topic", &acl.denied_topic]);
    }
    let out = output(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "{stdout}--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let results: Vec<CaseResult> = stdout
        .lines()
        .map(|line| {
            parse_case(line).unwrap_or_else(|| panic!("not a case line: {line:?}\n{}", report()))
        })
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.case.as_str())
        .collect();
    assert!(
        out.status.success() && failed.is_empty() && !results.is_empty(),
        "paho suite {version:?} against {}: {} failed: {failed:?}\n{}",
        broker.addr,
        out.status,
        report()
    );
    let acl_cases = results
        .iter()
        .filter(|r| r.case.starts_with("acl_"))
        .count();
    assert_eq!(
        acl_cases,
        if broker.acl.is_some() { 2 } else { 0 },
        "ACL cases run\n{}",
        report()
    );
    results
}

fn parse_case(line: &str) -> Option<CaseResult> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(CaseResult {
        case: v.get("case")?.as_str()?.to_owned(),
        version: v.get("version")?.as_str()?.to_owned(),
        ok: v.get("ok")?.as_bool()?,
        detail: v.get("detail")?.as_str()?.to_owned(),
    })
}

/// Runs a command to its end.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Panics naming the Debian package to install unless `program` is on PATH.
fn require(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = found {
        panic!("{program} cannot run ({e}): apt-get install {package}");
    }
}

/// Runs the `mosquitto_pub`/`mosquitto_sub` cases for `version` against `broker`; panics
/// with the expected and received output lines of the first case that differs.
pub async fn mosquitto_clients_suite(broker: &Broker, version: Version) {
    require("mosquitto_pub", "mosquitto-clients");
    require("mosquitto_sub", "mosquitto-clients");
    let clients = Clients {
        addr: broker.addr,
        version,
        prefix: format!(
            "mc{:08x}v{}",
            rand::rng().random::<u32>(),
            version.script_arg()
        ),
    };
    tokio::task::spawn_blocking(move || {
        clients.qos_round_trip();
        clients.retained_set_and_cleared();
        clients.wildcard_plus();
        clients.will_only_on_abrupt_close();
        clients.session_resume();
        if version == Version::V5 {
            clients.v5_properties();
        }
    })
    .await
    .expect("the mosquitto clients suite's thread panicked or was cancelled");
}

/// The command-line clients pointed at one broker, with this run's topic prefix.
struct Clients {
    addr: SocketAddr,
    version: Version,
    prefix: String,
}

/// The `-F` format every subscriber prints messages with: topic, QoS, retain, payload.
const FORMAT: &str = "%t %q %r %p";

impl Clients {
    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// `program` with the connection options. Its stdout is line-buffered (`stdbuf -oL`):
    /// `-d` prints the SUBACK that says a subscriber is ready, and printed into a pipe it
    /// would sit in stdio's buffer until the client exits.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", program])
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(["-V", self.version.mosquitto_arg()]);
        cmd
    }

    /// `mosquitto_pub` with `args` after the connection options; must exit 0.
    fn publish(&self, args: &[&str]) {
        let out = output(self.command("mosquitto_pub").args(args));
        assert!(
            out.status.success(),
            "mosquitto_pub {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `mosquitto_sub` with `args`, returned once the broker acknowledged its SUBSCRIBE.
    fn subscribe(&self, args: &[&str]) -> Sub {
        let mut child = self
            .command("mosquitto_sub")
            .args(["-d", "-W", "10"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run mosquitto_sub: {e} (apt-get install mosquitto-clients)")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sub = Sub {
            child,
            lines,
            prefix: self.prefix.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            debug: Vec::new(),
        };
        sub.next_line("the SUBACK", |l| l.starts_with("Subscribed (mid:"));
        sub
    }

    fn qos_round_trip(&self) {
        let filter = self.topic("qos/#");
        let sub = self.subscribe(&["-q", "2", "-C", "3", "-F", FORMAT, "-t", &filter]);
        for qos in ["0", "1", "2"] {
            self.publish(&[
                "-q",
                qos,
                "-t",
                &self.topic(&format!("qos/{qos}")),
                "-m",
                &format!("m{qos}"),
            ]);
        }
        let want = ["qos/0 0 0 m0", "qos/1 1 0 m1", "qos/2 2 0 m2"];
        sub.expect(&want.map(|l| self.topic(l)));
    }

    fn retained_set_and_cleared(&self) {
        let t = self.topic("ret");
        self.publish(&["-q", "1", "-r", "-t", &t, "-m", "kept"]);
        let sub = self.subscribe(&["-q", "1", "-C", "1", "-F", FORMAT, "-t", &t]);
        sub.expect(&[format!("{t} 1 1 kept")]);
        self.publish(&["-q", "1", "-r", "-n", "-t", &t]);
        let sub = self.subscribe(&["-q", "1", "-C", "1", "-F", FORMAT, "-t", &t]);
        self.publish(&["-q", "1", "-t", &t, "-m", "live"]);
        sub.expect(&[format!("{t} 1 0 live")]);
    }

    fn wildcard_plus(&self) {
        let sub = self.subscribe(&["-C", "2", "-F", FORMAT, "-t", &self.topic("w/+/c")]);
        for t in ["w/a/c", "w/a/d", "w/a/c/d", "w//c"] {
            self.publish(&["-q", "1", "-t", &self.topic(t), "-m", t]);
        }
        sub.expect(&[self.topic("w/a/c 0 0 w/a/c"), self.topic("w//c 0 0 w//c")]);
    }

    /// A client that leaves with DISCONNECT does not publish its will; one killed does.
    fn will_only_on_abrupt_close(&self) {
        let t = self.topic("will");
        let mut watch = self.subscribe(&["-q", "1", "-C", "2", "-F", FORMAT, "-t", &t]);
        let unused = self.topic("unused");
        let will = |payload| {
            [
                "--will-topic",
                t.as_str(),
                "--will-payload",
                payload,
                "--will-qos",
                "1",
            ]
        };
        self.subscribe(&[&["-E", "-t", unused.as_str()][..], &will("clean")].concat())
            .expect(&[]);
        let mut doomed = self.subscribe(&[&["-t", unused.as_str()][..], &will("gone")].concat());
        doomed.kill();
        let got = watch.next_line("the will", |l| l.starts_with(&self.prefix));
        assert_eq!(got, format!("{t} 1 0 gone"), "the killed client's will");
        self.publish(&["-q", "1", "-t", &t, "-m", "end"]);
        watch.expect(&[format!("{t} 1 0 end")]);
    }

    /// Messages published while a persistent session is away arrive once on its return.
    fn session_resume(&self) {
        let t = self.topic("sess");
        let id = self.topic("sess").replace('/', "-");
        let mut persistent = vec!["-c", "-i", &id, "-q", "2", "-F", FORMAT, "-t", &t];
        if self.version == Version::V5 {
            persistent.extend(["-x", "300"]);
        }
        self.subscribe(&[&persistent[..], &["-E"]].concat())
            .expect(&[]);
        self.publish(&["-q", "1", "-t", &t, "-m", "s1"]);
        self.publish(&["-q", "2", "-t", &t, "-m", "s2"]);
        let back = self.subscribe(&[&persistent[..], &["-C", "2"]].concat());
        back.expect(&[format!("{t} 1 0 s1"), format!("{t} 2 0 s2")]);
        self.subscribe(&["-E", "-i", &id, "-t", &t]).expect(&[]);
    }

    /// 5.0 properties set with `mosquitto_pub -D` reach `mosquitto_sub` unchanged, user
    /// properties in order with repeated keys.
    fn v5_properties(&self) {
        let t = self.topic("props");
        let sub = self.subscribe(&["-C", "1", "-F", "%t %P|%C|%R|%D|%p", "-t", &t]);
        self.publish(&[
            "-t",
            &t,
            "-m",
            "body",
            "-D",
            "publish",
            "user-property",
            "b",
            "2",
            "-D",
            "publish",
            "user-property",
            "a",
            "1",
            "-D",
            "publish",
            "user-property",
            "b",
            "3",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            &self.topic("reply"),
            "-D",
            "publish",
            "correlation-data",
            "c0rr",
        ]);
        sub.expect(&[format!(
            "{t} b:2 a:1 b:3|text/plain|{}|c0rr|body",
            self.topic("reply")
        )]);
    }
}

/// A running `mosquitto_sub -d` and the lines it printed.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Message lines start with it; the rest is `-d` debug output.
    prefix: String,
    args: Vec<String>,
    /// Debug lines seen so far, printed with a failure.
    debug: Vec<String>,
}

impl Sub {
    /// The next line `wanted` accepts, keeping the lines before it as debug output.
    fn next_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => self.debug.push(line),
                Err(e) => panic!(
                    "mosquitto_sub {:?}: no {what} ({e}); it printed:\n{}",
                    self.args,
                    self.debug.join("\n")
                ),
            }
        }
    }

    /// Waits for the client to exit (`-C`, `-E`, or `-W` failing it) and compares the message lines
    /// it printed with `want`, exactly.
    fn expect(mut self, want: &[String]) {
        // Every client runs with -W, so it exits on its own even when a message never comes.
        let status = self.child.wait().expect("mosquitto_sub's status");
        self.debug.extend(self.lines.iter());
        let got: Vec<&String> = self
            .debug
            .iter()
            .filter(|l| l.starts_with(&self.prefix))
            .collect();
        let stderr = self.child.stderr.take().map(std::io::read_to_string);
        assert!(
            status.success() && got == want.iter().collect::<Vec<_>>(),
            "mosquitto_sub {:?} ({status}): got {got:#?}, want {want:#?}\nall output:\n{}\nstderr: {stderr:?}",
            self.args,
            self.debug.join("\n"),
        );
    }

    /// Ends the client without DISCONNECT: SIGKILL, so the kernel closes its socket.
    fn kill(&mut self) {
        self.child.kill().expect("kill mosquitto_sub");
        self.child.wait().expect("reap mosquitto_sub");
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The reference broker: a Mosquitto process on a free port, stopped when dropped.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// Topics the ACL user may not touch in the reference broker's configuration.
const DENIED: &str = "secret/x";

/// Dynamic-security configuration: anyone may do anything except `acluser` (password
/// `aclpass`) on `secret/#`. Mosquitto's `acl_file` cannot refuse a SUBSCRIBE (it grants
/// and filters at delivery), so the plugin is what gives SUBACK 0x80/0x87. The password is
/// base64(PBKDF2-HMAC-SHA512("aclpass", salt "lintas-test!", 101 rounds)), the form
/// `mosquitto_ctrl dynsec` writes.
const DYNSEC: &str = r#"{
  "clients": [{
    "username": "acluser",
    "password": "Zp8h8dL9Pwb33aA3SaKQIrBPo+tSG3hPYourrHPBuAgV3T0NovLkVVMM+bZlllGT9aOEFw/AcWNzHiyNoQWXmQ==",
    "salt": "bGludGFzLXRlc3Qh",
    "iterations": 101,
    "roles": [{"rolename": "no-secrets"}]
  }],
  "roles": [{
    "rolename": "no-secrets",
    "acls": [
      {"acltype": "publishClientSend", "topic": "secret/#", "allow": false},
      {"acltype": "subscribePattern", "topic": "secret/#", "allow": false}
    ]
  }],
  "defaultACLAccess": {"publishClientSend": true, "publishClientReceive": true, "subscribe": true, "unsubscribe": true}
}"#;

impl Mosquitto {
    fn start() -> Self {
        require("mosquitto", "mosquitto");
        let dir = TempDir::new();
        let plugin = dynsec_plugin();
        let dynsec = dir.write("dynsec.json", DYNSEC);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.write(
            "mosquitto.conf",
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 plugin {}\nplugin_opt_config_file {}\n",
                plugin.display(),
                dynsec.display()
            ),
        );
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mosquitto: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait().expect("mosquitto's status") {
                let err = child.stderr.take().map(std::io::read_to_string);
                panic!("mosquitto -c {} exited ({status}): {err:?}", conf.display());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto is not listening on {addr} after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// Debian ships the plugin in the multiarch library directory.
fn dynsec_plugin() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("mosquitto_dynamic_security.so"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("no /usr/lib/*/mosquitto_dynamic_security.so (apt-get install mosquitto)")
        })
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "the reference run against Mosquitto, by hand: it checks the suites, not lintas"]
async fn reference_mosquitto() {
    let mosquitto = Mosquitto::start();
    let broker = Broker {
        addr: mosquitto.addr,
        acl: Some(AclUser {
            user: "acluser".into(),
            password: "aclpass".into(),
            denied_topic: DENIED.into(),
        }),
        tolerate: &["takeover-without-disconnect", "overlap-qos-not-highest"],
    };
    for version in [Version::V311, Version::V5] {
        for r in paho_suite(&broker, version).await {
            if !r.detail.is_empty() {
                println!("mosquitto {} {}: {}", r.version, r.case, r.detail);
            }
        }
        mosquitto_clients_suite(&broker, version).await;
    }
}

/// lintas's broker passes both suites in both versions with no tolerance: anonymous
/// clients may do anything (`#` does not reach `$`-topics, in rules as in subscriptions,
/// so `$conf/#` and `$SYS/#` have rules of their own) but the ACL user (password "pw") may
/// not touch `secret/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lintas_passes_both_suites_in_both_versions() {
    let node = crate::harness::Node::start(
        "allow_anonymous = true\nsys_interval = \"1s\"\n\
         [[users]]\nname = \"acluser\"\n\
         password_hash = \"$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$Hgsbc6FDwl/qbUWxDrr+ZjetYYKE+7fDe5btmNdDfm0\"\n\
         [[acl]]\ntopic = \"#\"\naccess = \"readwrite\"\n\
         [[acl]]\ntopic = \"$conf/#\"\naccess = \"readwrite\"\n\
         [[acl]]\ntopic = \"$SYS/#\"\naccess = \"read\"\n\
         [[acl]]\nuser = \"acluser\"\ntopic = \"secret/#\"\naccess = \"deny\"\n",
    )
    .await;
    let broker = Broker {
        addr: node.addr,
        acl: Some(AclUser {
            user: "acluser".into(),
            password: "pw".into(),
            denied_topic: DENIED.into(),
        }),
        tolerate: &[],
    };
    for version in [Version::V311, Version::V5] {
        paho_suite(&broker, version).await;
        mosquitto_clients_suite(&broker, version).await;
    }
    node.stop().await;
}
