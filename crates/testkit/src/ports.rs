//! Loopback ports for tests: one to start a server on, one that refuses.
//!
//! Tests run in parallel, and many of them take "any free port" (port 0)
//! for a mock cluster, a registry double or a simulator. The kernel hands
//! those out, and the source ports of outgoing connections, from its
//! ephemeral range. A port found free there and released so that a server
//! (a separate process) can take it may be handed to another test in the
//! meantime, and a port that is meant to stay unreachable may start
//! answering. So:
//!
//! - [`free_port`] picks a port below the ephemeral range, which the
//!   kernel never hands out on its own; within one process no port is
//!   picked twice, so a server stopped and started again on its port
//!   (a broker restarted) finds it still free.
//! - [`refused_port`] holds a socket that is bound and never listens: the
//!   port stays taken for as long as it is held, and the kernel answers
//!   every connection to it with a reset, which clients report as refused.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use socket2::{Domain, Socket, Type};

/// Lowest port [`free_port`] picks.
const FLOOR: u16 = 12_000;

/// A loopback port that was free when this was called, outside the range
/// the kernel hands out for port 0; never the same one twice in a process.
///
/// # Panics
/// When no port between 12000 and the ephemeral range is free.
pub fn free_port() -> u16 {
    // Where this process starts in the range: processes that run one after
    // another (test binaries) should not all try the same ports first.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ceiling = ephemeral_floor();
    if ceiling <= FLOOR + 100 {
        // An unusual range: nothing below it to pick from.
        return any_port();
    }
    let span = u32::from(ceiling - FLOOR);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = FLOOR + u16::try_from(offset).expect("within the span");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FLOOR} and {ceiling}");
}

/// The first port of the kernel's ephemeral range (32768 unless set).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Any free port, as the kernel picks it.
fn any_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A port on 127.0.0.1 that refuses connections while this is held.
pub struct RefusedPort {
    _socket: Socket,
    port: u16,
}

impl RefusedPort {
    /// The port's number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Takes a loopback port that refuses connections until the result is
/// dropped.
pub fn refused_port() -> RefusedPort {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    socket.bind(&any.into()).expect("bind a loopback port");
    let port = socket
        .local_addr()
        .expect("its address")
        .as_socket()
        .expect("an IP address")
        .port();
    RefusedPort {
        _socket: socket,
        port,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::ErrorKind;
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn a_held_port_refuses_connections_and_cannot_be_taken() {
        let held = refused_port();
        let e = TcpStream::connect(held.address()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        let e = TcpListener::bind(held.address()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn free_ports_are_bindable_below_the_ephemeral_range_and_never_repeat() {
        let floor = ephemeral_floor();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let port = free_port();
            assert!((FLOOR..floor).contains(&port), "{port}");
            assert!(seen.insert(port), "{port} picked twice");
            // Free: a server can take it.
            drop(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap());
        }
    }
}
