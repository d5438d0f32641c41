//! Address blocks are distinct within a process and free ports are bindable.

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};

use testkit::{free_port, LoopbackAllocator};

#[test]
fn allocators_hand_out_distinct_loopback_addresses() {
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let mut alloc = LoopbackAllocator::new();
        for _ in 0..300 {
            let ip = alloc.next_ip();
            assert!(ip.is_loopback());
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255, "{ip}");
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
}

#[test]
fn free_port_is_bindable_on_its_address() {
    let ip = IpAddr::V4(LoopbackAllocator::new().next_ip());
    let port = free_port(ip).expect("free port");
    assert_ne!(port, 0);
    TcpListener::bind((ip, port)).expect("port is free");
}
