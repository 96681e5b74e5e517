//! Where the last `n` lines of a file start, found by reading blocks backwards from its end (the
//! kubelet's `findTailLineStartIndex`): a tail of a 1 GiB log reads a few blocks, never the file.

use std::io::{Read, Seek, SeekFrom};

/// Bytes read per step backwards.
const BLOCK: u64 = 64 * 1024;

/// The offset of the first of the last `n` newline-terminated lines of `f` (an unterminated last
/// line comes along); 0 when the file has no more than `n` lines.
pub fn start_of_last_lines<F: Read + Seek>(f: &mut F, n: u64) -> std::io::Result<u64> {
    let size = f.seek(SeekFrom::End(0))?;
    let mut buf = vec![0u8; BLOCK as usize];
    // Newlines seen so far, scanning from the end; the (n+1)-th one ends the line before the tail.
    let mut seen = 0u64;
    let mut right = size;
    while right > 0 {
        let left = right.saturating_sub(BLOCK);
        let len = (right - left) as usize;
        f.seek(SeekFrom::Start(left))?;
        f.read_exact(&mut buf[..len])?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen > n {
                    return Ok(left + i as u64 + 1);
                }
            }
        }
        right = left;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail(text: &[u8], n: u64) -> &[u8] {
        let start = start_of_last_lines(&mut Cursor::new(text), n).unwrap();
        &text[start as usize..]
    }

    #[test]
    fn finds_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail(b"a\nb\nc\n", 1), b"c\n");
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 3), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 10), b"a\nb\nc\n");
        assert_eq!(tail(b"", 5), b"");
        // An unterminated last line is not counted but comes along, as in the kubelet.
        assert_eq!(tail(b"a\nb\nc", 1), b"b\nc");
    }

    #[test]
    fn crosses_block_boundaries() {
        let mut text = Vec::new();
        for i in 0..100_000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        assert_eq!(tail(&text, 2), b"line 99998\nline 99999\n");
        let all = tail(&text, 99_999);
        assert!(all.starts_with(b"line 1\n"), "{}", all.len());
        assert_eq!(tail(&text, 100_000), &text[..]);
    }
}
