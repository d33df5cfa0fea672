//! The messages between runner and its network helper (see [`super::remote`]): a JSON header
//! line whose `bytes` says how many raw bytes follow it (matrices as little-endian `f64`, saved
//! model files as they are).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, Write};

pub struct Message {
    pub header: Value,
    pub payload: Vec<u8>,
}

/// The header line, saying how many payload bytes follow.
fn write_header(out: &mut impl Write, mut header: Value, bytes: usize) -> Result<()> {
    header["bytes"] = bytes.into();
    let mut line = serde_json::to_vec(&header)?;
    line.push(b'\n');
    Ok(out.write_all(&line)?)
}

pub fn send(out: &mut impl Write, header: Value, payload: &[u8]) -> Result<()> {
    write_header(out, header, payload.len())?;
    out.write_all(payload)?;
    out.flush()?;
    Ok(())
}

/// The next message, or `None` where the stream has ended.
pub fn receive(input: &mut impl BufRead) -> Result<Option<Message>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let header: Value = serde_json::from_str(&line).context("a malformed message header")?;
    let mut payload = vec![0; header["bytes"].as_u64().unwrap_or(0) as usize];
    input
        .read_exact(&mut payload)
        .context("a message shorter than its header said")?;
    Ok(Some(Message { header, payload }))
}

/// Sends `count` floats as the payload, written as they come (a training matrix is not copied
/// into a buffer first).
pub fn send_floats(
    out: &mut impl Write,
    header: Value,
    count: usize,
    values: impl IntoIterator<Item = f64>,
) -> Result<()> {
    write_header(out, header, count * 8)?;
    let mut written = 0;
    for v in values {
        out.write_all(&v.to_le_bytes())?;
        written += 1;
    }
    if written != count {
        bail!("a message of {written} values where its header says {count}");
    }
    out.flush()?;
    Ok(())
}

/// Reads a payload's floats in the order they were put.
pub struct Floats<'a>(&'a [u8]);

impl<'a> Floats<'a> {
    pub fn new(payload: &'a [u8]) -> Floats<'a> {
        Floats(payload)
    }

    pub fn take(&mut self, n: usize) -> Result<Vec<f64>> {
        if self.0.len() < n * 8 {
            bail!("a message holds fewer values than its header said");
        }
        let (head, rest) = self.0.split_at(n * 8);
        self.0 = rest;
        Ok(head
            .chunks_exact(8)
            .map(|b| {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(b);
                f64::from_le_bytes(bytes)
            })
            .collect())
    }
}

/// A header's count field.
pub fn count(header: &Value, key: &str) -> Result<usize> {
    header[key]
        .as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("a message without `{key}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_comes_back_as_it_was_sent() {
        let mut stream = Vec::new();
        let values = [1.5, f64::NAN, -0.0, 1e-300];
        send_floats(&mut stream, serde_json::json!({"op": "x"}), 4, values).unwrap();
        send(&mut stream, serde_json::json!({"op": "y"}), &[]).unwrap();
        let mut input = std::io::Cursor::new(stream);
        let first = receive(&mut input).unwrap().unwrap();
        assert_eq!(first.header["op"], "x");
        let back = Floats::new(&first.payload).take(4).unwrap();
        assert_eq!(back[0], 1.5);
        assert!(back[1].is_nan());
        assert!(back[2] == 0.0 && back[2].is_sign_negative());
        assert_eq!(back[3], 1e-300);
        assert!(Floats::new(&first.payload).take(5).is_err());
        assert_eq!(receive(&mut input).unwrap().unwrap().header["op"], "y");
        assert!(receive(&mut input).unwrap().is_none());
    }
}
