//! A zip archive writer, just enough for a deployment package: deflated files with their
//! Unix modes, no directories, no zip64. It is ours rather than a crate's because the
//! format's part we need is four fixed records over what `flate2` already gives us
//! (deflate and CRC-32), and the archive must be byte-for-byte reproducible: every entry
//! carries the same timestamp, so the same binary always gives the same checksum.
//!
//! The Unix mode matters: the Functions host runs the handler as a file it finds in the
//! extracted package, and an archive without "made by Unix" and the mode in the external
//! attributes extracts the binary without its exec bit.

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use std::io::{self, Write};

/// 1980-01-01 00:00, the earliest time a zip entry can carry: fixed, for reproducibility.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Version 2.0: deflate. "Made by" also says Unix (3) in its high byte.
const VERSION: u16 = 20;
const MADE_BY_UNIX: u16 = (3 << 8) | VERSION;
/// Bit 11: names are UTF-8.
const FLAGS: u16 = 1 << 11;
const DEFLATE: u16 = 8;
/// Regular file, in the high bits of a Unix mode.
const S_IFREG: u32 = 0o100000;

/// One file already written, as the central directory describes it.
struct Entry {
    name: String,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u32,
    mode: u32,
}

/// Writes a zip archive to `out`, one file at a time.
pub(crate) struct ZipWriter<W: Write> {
    out: W,
    written: u64,
    entries: Vec<Entry>,
}

impl<W: Write> ZipWriter<W> {
    /// An empty archive over `out`.
    pub(crate) fn new(out: W) -> Self {
        ZipWriter {
            out,
            written: 0,
            entries: Vec::new(),
        }
    }

    /// Adds `data` as the file `name` (a `/`-separated relative path) with Unix `mode`.
    pub(crate) fn add(&mut self, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
        if name.starts_with('/') || name.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(io::Error::other(format!(
                "{name:?} is not a relative path inside the archive"
            )));
        }
        let mut crc = Crc::new();
        crc.update(data);
        let mut deflate = DeflateEncoder::new(Vec::new(), Compression::default());
        deflate.write_all(data)?;
        let packed = deflate.finish()?;
        let entry = Entry {
            name: name.to_string(),
            crc: crc.sum(),
            compressed: small(packed.len() as u64, name)?,
            size: small(data.len() as u64, name)?,
            offset: small(self.written, name)?,
            mode: S_IFREG | (mode & 0o7777),
        };
        let mut header = Vec::with_capacity(30 + name.len());
        put32(&mut header, 0x0403_4b50);
        put16(&mut header, VERSION);
        put16(&mut header, FLAGS);
        put16(&mut header, DEFLATE);
        put16(&mut header, DOS_TIME);
        put16(&mut header, DOS_DATE);
        put32(&mut header, entry.crc);
        put32(&mut header, entry.compressed);
        put32(&mut header, entry.size);
        put16(&mut header, name.len() as u16);
        put16(&mut header, 0);
        header.extend_from_slice(name.as_bytes());
        self.emit(&header)?;
        self.emit(&packed)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the central directory and the end record; returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let start = small(self.written, "the central directory")?;
        let mut dir = Vec::new();
        for e in &self.entries {
            put32(&mut dir, 0x0201_4b50);
            put16(&mut dir, MADE_BY_UNIX);
            put16(&mut dir, VERSION);
            put16(&mut dir, FLAGS);
            put16(&mut dir, DEFLATE);
            put16(&mut dir, DOS_TIME);
            put16(&mut dir, DOS_DATE);
            put32(&mut dir, e.crc);
            put32(&mut dir, e.compressed);
            put32(&mut dir, e.size);
            put16(&mut dir, e.name.len() as u16);
            put16(&mut dir, 0); // extra field
            put16(&mut dir, 0); // comment
            put16(&mut dir, 0); // disk
            put16(&mut dir, 0); // internal attributes
            put32(&mut dir, e.mode << 16);
            put32(&mut dir, e.offset);
            dir.extend_from_slice(e.name.as_bytes());
        }
        let count = u16::try_from(self.entries.len())
            .map_err(|_| io::Error::other("more files than a zip without zip64 holds"))?;
        let mut end = Vec::with_capacity(22);
        put32(&mut end, 0x0605_4b50);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, count);
        put16(&mut end, count);
        put32(&mut end, small(dir.len() as u64, "the central directory")?);
        put32(&mut end, start);
        put16(&mut end, 0);
        self.emit(&dir)?;
        self.emit(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// A size or offset as the 32 bits a zip without zip64 stores.
fn small(n: u64, what: &str) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::other(format!(
            "{what} is over 4 GiB, which this archive format cannot hold"
        ))
    })
}

fn put16(v: &mut Vec<u8>, n: u16) {
    v.extend_from_slice(&n.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, n: u32) {
    v.extend_from_slice(&n.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut z = ZipWriter::new(Vec::new());
        for (name, data, mode) in files {
            z.add(name, data, *mode).unwrap();
        }
        z.finish().unwrap()
    }

    #[test]
    fn another_reader_extracts_the_files_with_their_modes() {
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let bytes = archive(&[
            ("host.json", b"{\"version\": \"2.0\"}\n", 0o644),
            ("PollCas/function.json", b"{}", 0o644),
            ("cas-sentinel", &big, 0o755),
        ]);
        let dir = std::env::temp_dir().join(format!("cas-zip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let zip = dir.join("p.zip");
        std::fs::write(&zip, &bytes).unwrap();
        // Info-ZIP's unzip: tests every CRC, then extracts with the stored Unix modes.
        let test = std::process::Command::new("unzip")
            .arg("-t")
            .arg(&zip)
            .output()
            .expect("unzip is installed");
        assert!(
            test.status.success(),
            "{}",
            String::from_utf8_lossy(&test.stdout)
        );
        let out = dir.join("x");
        let status = std::process::Command::new("unzip")
            .args(["-q", "-d"])
            .arg(&out)
            .arg(&zip)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(out.join("cas-sentinel")).unwrap(), big);
        assert_eq!(
            std::fs::read(out.join("PollCas/function.json")).unwrap(),
            b"{}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("cas-sentinel"), 0o755);
        assert_eq!(mode("host.json") & 0o111, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_files_make_the_same_bytes_and_paths_stay_inside() {
        let files: &[(&str, &[u8], u32)] = &[("a", b"x", 0o644), ("b/c", b"y", 0o755)];
        assert_eq!(archive(files), archive(files));
        let mut z = ZipWriter::new(Vec::new());
        for bad in ["/etc/passwd", "../x", "a//b"] {
            assert!(z.add(bad, b"", 0o644).is_err(), "{bad}");
        }
    }
}
