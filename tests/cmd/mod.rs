//! Running a command from a test, and a free loopback port: the two helpers every harness
//! needs (included by tests/support and tests/gwsupport, and by suites that need neither).
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

/// Runs `command` to completion with `stdin` (none: an empty stdin) and captures its output.
pub fn output(command: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).expect("write the command's stdin");
    }
    child.wait_with_output().expect("the command's output")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}
