//! The terminal client with accounts, run as the binary in scriptable
//! mode: the password from `CHATMASTER_PASSWORD` or `--password-file`,
//! `/register` and `/password`, and the session line saying whether the
//! login is to an account.

mod client_util;
mod common;

use client_util::Scripted;
use common::TestServer;

const PW: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_log_in_with_the_environment_or_a_file() {
    let server = TestServer::start_default().await;
    let addr = server.addr;

    // /register in scriptable mode uses the configured password.
    let mut c = Scripted::start_env(
        addr,
        "register",
        &["--username", "bob"],
        &[("CHATMASTER_PASSWORD", PW)],
    );
    c.expect("-- logged in as bob (guest); channels (1): general");
    c.send("/register");
    c.expect_line(|l| l.starts_with("-- bob is now registered"));
    let (status, _, _) = c.finish();
    assert_eq!(status.code(), Some(0));

    // Without a password, a registered name is refused: exit 6.
    let c = Scripted::start(addr, "no password", &["--username", "bob"]);
    let (status, out, stderr) = c.wait();
    assert_eq!(status.code(), Some(6), "{out:?} {stderr}");
    assert!(stderr.contains("registered"), "{stderr}");

    // The environment's password logs in, to the account.
    let mut c = Scripted::start_env(
        addr,
        "env",
        &["--username", "BOB"],
        &[("CHATMASTER_PASSWORD", PW)],
    );
    c.expect("-- logged in as bob (account); channels (1): general");
    // /password reads the old and the new password (twice) as lines.
    c.send("/password");
    c.send(PW);
    c.send("a brand new password");
    c.send("a brand new password");
    c.expect("-- your password is changed");
    let (status, _, _) = c.finish();
    assert_eq!(status.code(), Some(0));

    // A password file with the new password; a wrong one is exit 6.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "a brand new password\n").unwrap();
    let file = file.to_str().unwrap();
    let mut c = Scripted::start(
        addr,
        "file",
        &["--username", "bob", "--password-file", file],
    );
    c.expect("-- logged in as bob (account); channels (1): general");
    let (status, _, _) = c.finish();
    assert_eq!(status.code(), Some(0));
    let c = Scripted::start_env(
        addr,
        "wrong",
        &["--username", "bob"],
        &[("CHATMASTER_PASSWORD", PW)],
    );
    let (status, _, stderr) = c.wait();
    assert_eq!(status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("Wrong password"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reads_the_password_twice_without_one_configured() {
    let server = TestServer::start_default().await;
    let mut c = Scripted::login(server.addr, "carol");
    c.send("/register");
    c.send(PW);
    c.send("something else");
    c.expect("!! the passwords differ; nothing was sent");
    c.send("/register");
    c.send(PW);
    c.send(PW);
    c.expect_line(|l| l.starts_with("-- carol is now registered"));
    let (status, _, _) = c.finish();
    assert_eq!(status.code(), Some(0));
    server.shutdown().await;
}
