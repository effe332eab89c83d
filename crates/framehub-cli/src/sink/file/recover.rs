//! What a file sink finds at start: a partial last record to cut off (a
//! crash mid-write), and each node's durable sequence number (the state
//! file, then the records after the offset it covers).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::sync::StateFile;

/// How far back a partial record's start is looked for at most; a longer
/// tail without a newline is cut whole.
const SCAN_BACK: u64 = 64 << 20;

pub fn last_byte(file: &mut File) -> io::Result<u8> {
    let mut byte = [0u8];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// Cuts the file back to its last whole record (ending in `\n`); returns
/// the bytes cut (0: nothing to do, or not a regular file).
pub fn repair(path: &Path) -> io::Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let len = meta.len();
    if !meta.is_file() || len == 0 || last_byte(&mut file)? == b'\n' {
        return Ok(0);
    }
    // Backwards, a block at a time, to the last newline.
    let mut end = len;
    let floor = len.saturating_sub(SCAN_BACK);
    let mut block = vec![0u8; 64 << 10];
    let keep = loop {
        if end <= floor {
            break floor;
        }
        let start = end.saturating_sub(block.len() as u64).max(floor);
        let part = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = memchr::memrchr(b'\n', part) {
            break start + i as u64 + 1;
        }
        end = start;
    };
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// The members of a record that name its node and sequence number.
#[derive(Deserialize)]
struct Marked {
    node: Option<String>,
    seq: Option<u64>,
}

/// Each node's highest sequence number: the state file's (if any), raised
/// by the records after the offset it covers (all of them without one, or
/// when the file is shorter than that offset: it was replaced).
pub fn marks(path: &Path, state_path: &Path) -> io::Result<HashMap<String, u64>> {
    let state: StateFile = match std::fs::read(state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %state_path.display(), "ignoring an unreadable acknowledgement state: {e}");
            StateFile::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => StateFile::default(),
        Err(e) => return Err(e),
    };
    let mut marks = state.durable;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(marks),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Ok(marks);
    }
    let len = file.metadata()?.len();
    let from = if state.offset <= len { state.offset } else { 0 };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(from))?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Only records of acknowledged delivery carry a sequence number.
        if memchr::memmem::find(&line, b"\"seq\":").is_none() {
            continue;
        }
        if let Ok(Marked {
            node: Some(node),
            seq: Some(seq),
        }) = serde_json::from_slice(&line)
        {
            let mark = marks.entry(node).or_insert(0);
            *mark = (*mark).max(seq);
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_record_is_cut_and_marks_come_from_state_and_tail() {
        let dir = std::env::temp_dir().join(format!("framehub-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        let head = "{\"node\":\"a\",\"seq\":5,\"frame\":{\"seq\":5}}\n";
        let tail = "{\"node\":\"a\",\"seq\":7,\"frame\":{}}\n{\"node\":\"b\",\"seq\":3,\"frame\":{\"seq\":99}}\n{\"node\":null,\"frame\":{}}\n";
        std::fs::write(
            &path,
            format!("{head}{tail}{{\"node\":\"a\",\"seq\":9,\"fr"),
        )
        .expect("write");
        assert_eq!(repair(&path).expect("repair"), 23);
        assert_eq!(repair(&path).expect("again"), 0);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{head}{tail}")
        );
        let state = dir.join(".f.acks");
        let marks = marks(&path, &state).expect("scan");
        assert_eq!(marks.get("a"), Some(&7));
        assert_eq!(
            marks.get("b"),
            Some(&3),
            "the record's seq, not the frame's"
        );
        // A state file covering the head: its marks, and the tail's.
        let mut durable = HashMap::new();
        durable.insert("c".to_owned(), 11);
        durable.insert("a".to_owned(), 6);
        StateFile {
            offset: head.len() as u64,
            durable,
        }
        .write(&state)
        .expect("state");
        let marks = super::marks(&path, &state).expect("scan");
        assert_eq!(
            (marks.get("a"), marks.get("b"), marks.get("c")),
            (Some(&7), Some(&3), Some(&11))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
