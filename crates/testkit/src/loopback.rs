//! Loopback addresses and ports for parallel tests.
//!
//! `cargo test` runs tests in parallel threads and several test binaries run at once, and all
//! of 127.0.0.0/8 is routed to `lo` on Linux. Giving each test its own 127.x.y.0/24 block
//! (derived from the process id and a process-wide counter) keeps their listeners apart, and
//! [`free_port`] finds a port the kernel considers free on a given address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::KitError;

/// Process-wide counter of claimed blocks; combined with the PID so that two test binaries
/// running at once land in different blocks (almost always; ports are still checked free).
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// Lowest second octet handed out: 127.0.x.x and 127.1.x.x are left to hand-written tests
/// and the lab (127.0.0.1, 127.0.1.x backends).
const FIRST_SECOND_OCTET: u32 = 2;
/// Number of usable second octets (2..=126).
const SECOND_OCTETS: u32 = 125;
/// Number of /24 blocks the allocator cycles through.
const BLOCKS: u32 = SECOND_OCTETS * 256;
/// How many times [`free_ports`] asks the kernel for a port before giving up (the kernel
/// hands out a just-released port again only rarely).
const PORT_TRIES: usize = 100;
/// Multiplier that spreads PIDs over the block space.
const PID_SPREAD: u32 = 7919;
/// Host numbers handed out inside a block (.1 ..= .254).
const LAST_HOST: u8 = 254;

/// Hands out distinct 127.x.y.z addresses from blocks private to this test.
///
/// Each allocator claims a fresh 127.x.y.0/24 block; [`next_ip`](Self::next_ip) returns
/// .1, .2, … and claims another block after .254.
#[derive(Debug)]
pub struct LoopbackAllocator {
    block: u32,
    next_host: u8,
}

impl LoopbackAllocator {
    /// Claims a new block, unique within this process.
    pub fn new() -> Self {
        LoopbackAllocator {
            block: claim_block(),
            next_host: 1,
        }
    }

    /// The block's network address, e.g. `127.45.7.0`.
    pub fn network(&self) -> Ipv4Addr {
        let (x, y) = block_octets(self.block);
        Ipv4Addr::new(127, x, y, 0)
    }

    /// The next unused address (never .0 or .255).
    pub fn next_ip(&mut self) -> Ipv4Addr {
        if self.next_host > LAST_HOST {
            self.block = claim_block();
            self.next_host = 1;
        }
        let (x, y) = block_octets(self.block);
        let ip = Ipv4Addr::new(127, x, y, self.next_host);
        self.next_host += 1;
        ip
    }
}

impl Default for LoopbackAllocator {
    fn default() -> Self {
        Self::new()
    }
}

fn claim_block() -> u32 {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    std::process::id().wrapping_mul(PID_SPREAD).wrapping_add(n) % BLOCKS
}

fn block_octets(block: u32) -> (u8, u8) {
    // Both values are < 256 by construction of BLOCKS.
    let x = (FIRST_SECOND_OCTET + block / 256) as u8;
    let y = (block % 256) as u8;
    (x, y)
}

/// Finds a TCP port that is free on `ip` right now (binds port 0, reads it, releases it).
///
/// There is a small window in which another process could take the port; per-test address
/// blocks make that practically impossible.
pub fn free_port(ip: IpAddr) -> Result<u16, KitError> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| KitError::io(format!("binding {ip}:0 to find a free port"), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| KitError::io("reading bound address", e))?
        .port();
    Ok(port)
}

/// One port per entry of `wanted` on `ip`: the given port, or a free one that differs from
/// every other entry (a just-released port may be handed out twice, and two listeners of one
/// instance cannot share it).
pub fn free_ports<const N: usize>(
    ip: IpAddr,
    wanted: [Option<u16>; N],
) -> Result<[u16; N], KitError> {
    let mut ports = wanted.map(|p| p.unwrap_or(0));
    for i in 0..N {
        if ports[i] != 0 {
            continue;
        }
        let mut tries = 0;
        ports[i] = loop {
            let p = free_port(ip)?;
            if !ports.contains(&p) {
                break p;
            }
            tries += 1;
            if tries >= PORT_TRIES {
                return Err(KitError::io(
                    format!("finding {N} distinct free ports on {ip}"),
                    std::io::Error::from(std::io::ErrorKind::AddrInUse),
                ));
            }
        };
    }
    Ok(ports)
}
