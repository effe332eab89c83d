//! `framehub serve`'s NATS connection with credentials and TLS (issue 15,
//! item 1), real processes only: a nats-server that requires a token, a
//! user and password, an NKey, a `.creds` user (operator mode, JWTs made
//! and signed here) or a client certificate; the daemon with a `nats` sink
//! given that credential by file and by environment variable; devices on
//! TCP; the stream read back by a nats-py consumer logged in on its own
//! (`nats_support::dump_stream_with`). A wrong credential or certificate
//! keeps the daemon up with `/healthz` 503 naming the server and the
//! reason; no secret shows in argv, logs or the admin API.

/// The TLS listener tests' certificates (rcgen), reused for NATS.
#[path = "../../framehub/tests/common/tls.rs"]
mod certs;
mod common;
mod nats_support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Daemon, PATIENCE, eventually, framehub, get_json, http_get, temp_dir};
use nats_support::{NatsServer, dump_stream_with};
use serde_json::{Value, json};

/// Frames each daemon run sends.
const FRAMES: u64 = 300;
/// The stream every run publishes into (created by the first).
const STREAM: &str = "AUTH";
/// The environment variables a NATS secret can come from: cleared for every
/// daemon, so only what a test sets applies.
const SECRET_ENVS: [&str; 3] = [
    "FRAMEHUB_NATS_TOKEN",
    "FRAMEHUB_NATS_PASSWORD",
    "FRAMEHUB_NATS_NKEY_SEED",
];

/// A secret no other test uses.
fn random_secret(kind: &str) -> String {
    format!(
        "{kind}-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

/// Writes a secret file the way an operator should: readable by its owner
/// only.
fn write_secret(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_owned()
}

/// `framehub serve` with a `nats` sink into [`STREAM`] on `url`; `tables`
/// go into the config after `[nats]` (`[nats.auth]`, `[nats.tls]`), `env`
/// into the environment. Trace logs, so that a secret any layer logs shows.
fn serve(dir: &Path, run: &str, url: &str, tables: &str, env: &[(&str, &str)]) -> Daemon {
    let path = dir.join(format!("{run}.toml"));
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [{url:?}]\nconnect_timeout = \"2s\"\n{tables}\n\
             [[listener]]\nname = \"default\"\nbind = \"127.0.0.1:0\"\n\n\
             [[sink]]\ntype = \"nats\"\ndrain_timeout = \"20s\"\n\
             [sink.jetstream]\nstream = {STREAM:?}\n"
        ),
    )
    .expect("write config");
    let mut command = framehub();
    command
        .args([
            "serve",
            "--log-format",
            "json",
            "--quiet",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "trace");
    for var in SECRET_ENVS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    Daemon::spawn(command)
}

fn frame(node: &str, n: u64) -> String {
    format!("{{\"node_id\":\"{node}\",\"timestamp\":{n},\"n\":{n}}}\n")
}

/// Frames delivered into `node`'s queue so far.
fn frames_of(admin: SocketAddr, node: &str) -> u64 {
    get_json(admin, "/api/nodes")["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["name"] == node)
        .map(|n| n["frames"].as_u64().expect("frames"))
        .sum()
}

/// Fails if `secret` is in the daemon's argv, its log so far or what its
/// admin server shows.
fn check_not_shown(daemon: &mut Daemon, secret: &str) {
    let pid = daemon.child.id();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).expect("/proc cmdline");
    assert!(
        !String::from_utf8_lossy(&argv).contains(secret),
        "the secret is in serve's argv"
    );
    let admin = daemon.admin();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/overview",
        "/api/stats",
        "/api/nodes",
        "/api/connections",
    ] {
        let (_, body) = http_get(admin, path);
        assert!(!body.contains(secret), "the secret is in {path}: {body}");
    }
    let logs = daemon.logs_so_far();
    assert!(!logs.is_empty(), "no log lines to check");
    for line in logs {
        assert!(
            !line.to_string().contains(secret),
            "the secret is in a log line: {line}"
        );
    }
}

/// Runs one daemon that sends [`FRAMES`] frames of `node` and exits once
/// JetStream acknowledged them all; checks on the way that it was healthy
/// and showed none of `secrets`.
fn publish(daemon: &mut Daemon, node: &str, secrets: &[&str]) {
    let admin = daemon.admin();
    let addr = daemon.addr();
    eventually("/healthz 200 (connected to NATS)", || {
        http_get(admin, "/healthz").0 == 200
    });
    let mut device = TcpStream::connect(addr).expect("connect");
    let batch: String = (1..=FRAMES).map(|n| frame(node, n)).collect();
    device.write_all(batch.as_bytes()).expect("write frames");
    eventually("every frame read", || frames_of(admin, node) == FRAMES);
    for secret in secrets {
        check_not_shown(daemon, secret);
    }
    drop(device);
    assert_eq!(
        daemon.terminate(),
        0,
        "exit 0: JetStream acknowledged every frame"
    );
    for secret in secrets {
        for line in daemon.logs_so_far() {
            assert!(
                !line.to_string().contains(secret),
                "the secret is in a log line: {line}"
            );
        }
    }
}

/// Checks that the stream holds `1..=FRAMES` of each of `nodes`, each once
/// and in order, read by nats-py logged in with `login`.
fn check_stream(url: &str, login: &Value, nodes: &[&str]) {
    let messages = dump_stream_with(url, STREAM, login);
    for node in nodes {
        let ns: Vec<u64> = messages
            .iter()
            .filter(|m| m["headers"]["Framehub-Node"] == *node)
            .map(|m| {
                let data: Value =
                    serde_json::from_str(m["data"].as_str().expect("data")).expect("JSON frame");
                data["n"].as_u64().expect("n")
            })
            .collect();
        assert_eq!(
            ns,
            (1..=FRAMES).collect::<Vec<_>>(),
            "{node}: every frame once, in order"
        );
    }
    assert_eq!(messages.len() as u64, FRAMES * nodes.len() as u64);
}

/// A daemon that cannot log in (`why` is the reason it should give): it
/// keeps running, `/healthz` says 503 naming the server and the reason,
/// its log says so too, nothing shows `secrets`, and SIGTERM ends it.
fn refused(dir: &Path, run: &str, nats: &NatsServer, tables: &str, why: &str, secrets: &[&str]) {
    let mut daemon = serve(dir, run, &nats.url(), tables, &[]);
    let admin = daemon.admin();
    let server = format!("127.0.0.1:{}", nats.port);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = http_get(admin, "/healthz");
        if status == 503 && body.contains(&server) && body.contains(why) {
            eprintln!("{run}: /healthz {status} {body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{run}: /healthz never said 503 with {server} and {why:?}; last: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged = daemon.wait_log("NATS: cannot connect");
    let reason = logged["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&server) && reason.contains(why),
        "{run}: the log names the server and why: {logged}"
    );
    for secret in secrets {
        check_not_shown(&mut daemon, secret);
    }
    assert_eq!(daemon.terminate(), 0, "{run}: exits cleanly on SIGTERM");
}

#[test]
fn a_token_from_a_file_or_the_environment() {
    let dir = temp_dir("nats-auth-token");
    let token = random_secret("token");
    let nats = NatsServer::start_with(&dir, &format!("authorization {{ token: {token:?} }}"));
    let file = write_secret(&dir.join("nats.token"), &format!("{token}\n"));
    let by_file = format!("[nats.auth]\ntoken_file = {file:?}\n");
    publish(
        &mut serve(&dir, "file", &nats.url(), &by_file, &[]),
        "byfile",
        &[&token],
    );
    publish(
        &mut serve(
            &dir,
            "env",
            &nats.url(),
            "",
            &[("FRAMEHUB_NATS_TOKEN", &token)],
        ),
        "byenv",
        &[&token],
    );
    check_stream(
        &nats.url(),
        &json!({ "token": token }),
        &["byfile", "byenv"],
    );

    let wrong = random_secret("token");
    let wrong_file = write_secret(&dir.join("wrong.token"), &wrong);
    refused(
        &dir,
        "wrong",
        &nats,
        &format!("[nats.auth]\ntoken_file = {wrong_file:?}\n"),
        "authorization violation",
        &[&wrong, &token],
    );
}

#[test]
fn a_user_and_password_from_a_file_or_the_environment() {
    let dir = temp_dir("nats-auth-user");
    let password = random_secret("password");
    let nats = NatsServer::start_with(
        &dir,
        &format!("authorization {{ users: [{{ user: framehub, password: {password:?} }}] }}"),
    );
    let file = write_secret(&dir.join("nats.password"), &format!("{password}\n"));
    let by_file = format!("[nats.auth]\nuser = \"framehub\"\npassword_file = {file:?}\n");
    publish(
        &mut serve(&dir, "file", &nats.url(), &by_file, &[]),
        "byfile",
        &[&password],
    );
    publish(
        &mut serve(
            &dir,
            "env",
            &nats.url(),
            "[nats.auth]\nuser = \"framehub\"\n",
            &[("FRAMEHUB_NATS_PASSWORD", &password)],
        ),
        "byenv",
        &[&password],
    );
    check_stream(
        &nats.url(),
        &json!({ "user": "framehub", "password": password }),
        &["byfile", "byenv"],
    );

    let wrong = random_secret("password");
    let wrong_file = write_secret(&dir.join("wrong.password"), &wrong);
    refused(
        &dir,
        "wrong",
        &nats,
        &format!("[nats.auth]\nuser = \"framehub\"\npassword_file = {wrong_file:?}\n"),
        "authorization violation",
        &[&wrong, &password],
    );
}

#[test]
fn an_nkey_seed_from_a_file_or_the_environment() {
    let dir = temp_dir("nats-auth-nkey");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let nats = NatsServer::start_with(
        &dir,
        &format!(
            "authorization {{ users: [{{ nkey: {:?} }}] }}",
            user.public_key()
        ),
    );
    let file = write_secret(&dir.join("nats.nk"), &format!("{seed}\n"));
    publish(
        &mut serve(
            &dir,
            "file",
            &nats.url(),
            &format!("[nats.auth]\nnkey_seed_file = {file:?}\n"),
            &[],
        ),
        "byfile",
        &[&seed],
    );
    publish(
        &mut serve(
            &dir,
            "env",
            &nats.url(),
            "",
            &[("FRAMEHUB_NATS_NKEY_SEED", &seed)],
        ),
        "byenv",
        &[&seed],
    );
    check_stream(
        &nats.url(),
        &json!({ "nkeys_seed": file }),
        &["byfile", "byenv"],
    );

    // A valid key the server does not know.
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    let wrong_file = write_secret(&dir.join("wrong.nk"), &stranger);
    refused(
        &dir,
        "wrong",
        &nats,
        &format!("[nats.auth]\nnkey_seed_file = {wrong_file:?}\n"),
        "authorization violation",
        &[&stranger, &seed],
    );
}

/// A JWT as nats-io/jwt v2 encodes one: header, claims, the issuer's
/// ed25519 signature of both, each base64url without padding.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..)),
        "iat": now,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An account's claims: no limits, JetStream enabled when `jetstream`.
fn account_claims(jetstream: bool) -> Value {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1,
        "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    json!({ "limits": limits, "type": "account", "version": 2 })
}

/// A `.creds` file, as `nsc` writes one: the user JWT and its seed.
fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A user of `account` (signed by it) with no limits.
fn user_creds(account: &nkeys::KeyPair, name: &str) -> (String, String) {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let token = jwt(
        account,
        &user.public_key(),
        name,
        json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    (creds(&token, &seed), seed)
}

#[test]
fn a_creds_file_in_operator_mode() {
    let dir = temp_dir("nats-auth-creds");
    // Operator mode: the operator signs the accounts, the server trusts the
    // operator and knows the accounts from its memory resolver.
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let fleet = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "framehub-test",
        json!({ "system_account": system.public_key(), "type": "operator", "version": 2 }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        account_claims(false),
    );
    let fleet_jwt = jwt(
        &operator,
        &fleet.public_key(),
        "FLEET",
        account_claims(true),
    );
    let nats = NatsServer::start_with(
        &dir,
        &format!(
            "operator: {operator_jwt:?}\nsystem_account: {:?}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {}: {system_jwt:?}\n  {}: {fleet_jwt:?}\n}}\n",
            system.public_key(),
            system.public_key(),
            fleet.public_key(),
        ),
    );
    let (text, seed) = user_creds(&fleet, "framehub");
    let file = write_secret(&dir.join("framehub.creds"), &text);
    publish(
        &mut serve(
            &dir,
            "file",
            &nats.url(),
            &format!("[nats.auth]\ncreds_file = {file:?}\n"),
            &[],
        ),
        "byfile",
        &[&seed],
    );
    // The reader is another user of the same account.
    let (reader, _) = user_creds(&fleet, "reader");
    let reader_file = write_secret(&dir.join("reader.creds"), &reader);
    check_stream(
        &nats.url(),
        &json!({ "user_credentials": reader_file }),
        &["byfile"],
    );

    // A user of an account the server does not know.
    let (stranger, stranger_seed) = user_creds(&nkeys::KeyPair::new_account(), "stranger");
    let wrong_file = write_secret(&dir.join("stranger.creds"), &stranger);
    refused(
        &dir,
        "wrong",
        &nats,
        &format!("[nats.auth]\ncreds_file = {wrong_file:?}\n"),
        "authorization violation",
        &[&stranger_seed, &seed],
    );
}

#[test]
fn tls_with_a_client_certificate() {
    let dir = temp_dir("nats-auth-tls");
    let pki = certs::Pki::new();
    let (cert, key) = pki.client("framehub", &pki.ca, certs::Leaf::client("framehub"));
    let (reader_cert, reader_key) = pki.client("reader", &pki.ca, certs::Leaf::client("reader"));
    let ca = pki.path("ca.pem");
    let nats = NatsServer::start_with(
        &dir,
        &format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {ca:?}\n  verify: true\n  timeout: 5\n}}\n",
            pki.path("server.pem"),
            pki.path("server.key"),
        ),
    );
    let client_key = std::fs::read_to_string(&key).expect("client key");
    let secret_line = client_key
        .lines()
        .nth(1)
        .expect("a line of the key's base64")
        .to_owned();
    publish(
        &mut serve(
            &dir,
            "mtls",
            &nats.url(),
            &format!("[nats.tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n"),
            &[],
        ),
        "mtls",
        &[&secret_line],
    );
    check_stream(
        &nats.url(),
        &json!({ "tls": { "ca": ca, "cert": reader_cert, "key": reader_key } }),
        &["mtls"],
    );

    // The server requires a client certificate and gets none.
    refused(
        &dir,
        "nocert",
        &nats,
        &format!("[nats.tls]\nca = {ca:?}\n"),
        "CertificateRequired",
        &[],
    );
    // The server's certificate is not signed by the CA the daemon trusts.
    let other = certs::Ca::new("another CA");
    let other_ca = pki.write("other-ca.pem", &other.pem());
    refused(
        &dir,
        "wrongca",
        &nats,
        &format!("[nats.tls]\nca = {other_ca:?}\ncert = {cert:?}\nkey = {key:?}\n"),
        "UnknownIssuer",
        &[],
    );
}

/// Credentials written into a server URL would be shown with it (logs,
/// `/healthz`): the start fails with the config exit code, naming the key
/// and not the secret.
#[test]
fn credentials_in_a_server_url_are_refused_at_start() {
    let dir = temp_dir("nats-auth-url");
    let secret = random_secret("password");
    let path = dir.join("framehub.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [\"nats://framehub:{secret}@127.0.0.1:4222\"]\n\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n\n[[sink]]\ntype = \"nats\"\n"
        ),
    )
    .expect("write config");
    let out = framehub()
        .args(["serve", "--quiet", "--admin", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "bad config: {stderr}");
    assert!(stderr.contains("nats.servers[0]"), "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");
}
