//! The bounded line framer: never buffers more than its limit, never returns
//! a line over the limit, and chunking does not change the result.
#![no_main]
use director_proto::line::LineBuffer;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], max: usize, chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut lb = LineBuffer::new(max);
    let mut lines = Vec::new();
    for part in data.chunks(chunk.max(1)) {
        let mut rest = part;
        loop {
            let n = lb.feed(rest);
            rest = &rest[n..];
            assert!(lb.buffered() <= max + 1);
            loop {
                match lb.next_line() {
                    Ok(Some(l)) => {
                        assert!(l.len() <= max);
                        lines.push(l);
                    }
                    Ok(None) => break,
                    Err(_) => return (lines, true),
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    (lines, false)
}

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (max, chunk, data) = input;
    let max = usize::from(max);
    let whole = run(data, max, data.len().max(1));
    let chunked = run(data, max, usize::from(chunk));
    assert_eq!(whole, chunked);
});
