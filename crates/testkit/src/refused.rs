//! A loopback port that refuses connections.
//!
//! Tests of an unreachable broker or registry need an address where nothing
//! listens. Binding a listener to port 0 and dropping it frees a port, but
//! only for a moment: tests run in parallel, and the next mock cluster or
//! server that asks for any port may be given that very one, so the
//! "unreachable" server answers. A socket that is bound but never listens
//! keeps the port taken for as long as it is held, and the kernel answers
//! every connection to it with a reset, which clients report as refused.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

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
    use std::io::ErrorKind;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_held_port_refuses_connections_and_cannot_be_taken() {
        let held = refused_port();
        let e = TcpStream::connect(held.address()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        let e = TcpListener::bind(held.address()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
    }
}
