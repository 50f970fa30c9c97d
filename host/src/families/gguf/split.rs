//! A split GGUF read as one model. llama.cpp's `gguf-split` writes parts that are each a
//! valid GGUF: the first carries the model's metadata, every part carries `split.no`,
//! `split.count` and `split.tensors.count`, and its own tensors with offsets relative to
//! its own data section. Here the parts are chained into one seekable stream and every
//! tensor's offset is rebased onto it, so candle's loaders (which read one
//! `Content` from one reader) load a split model unchanged.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;

use crate::error::{LanternError, LanternResult};

/// Files read back to back as one stream.
pub struct ChainedFiles {
    files: Vec<(File, u64)>,
    /// Where each file starts in the chained stream.
    starts: Vec<u64>,
    len: u64,
    position: u64,
}

impl ChainedFiles {
    fn new(files: Vec<File>) -> std::io::Result<Self> {
        let mut chained = Vec::new();
        let mut starts = Vec::new();
        let mut len = 0;
        for file in files {
            let size = file.metadata()?.len();
            starts.push(len);
            len += size;
            chained.push((file, size));
        }
        Ok(ChainedFiles { files: chained, starts, len, position: 0 })
    }
}

impl Read for ChainedFiles {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.starts.partition_point(|&start| start <= self.position) - 1;
        let (file, size) = &mut self.files[index];
        let within = self.position - self.starts[index];
        let wanted = buf.len().min((*size - within) as usize);
        file.seek(SeekFrom::Start(within))?;
        let read = file.read(&mut buf[..wanted])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for ChainedFiles {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}

fn bad(message: String) -> LanternError {
    LanternError::InferenceFailed(format!("reading the split GGUF: {message}"))
}

fn split_u32(content: &Content, key: &str) -> Option<u32> {
    let value = content.metadata.get(key)?;
    value
        .to_u32()
        .ok()
        .or_else(|| value.to_u16().ok().map(u32::from))
        .or_else(|| value.to_i32().ok().and_then(|n| u32::try_from(n).ok()))
}

/// Opens the parts (in order) as one model: the first part's metadata, every part's
/// tensors, one reader. A single file is read as it is.
pub fn open(paths: &[&Path]) -> LanternResult<(Content, ChainedFiles)> {
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for path in paths {
        let mut file = File::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let content = Content::read(&mut file).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        files.push(file);
        contents.push(content);
    }
    let Some(first) = contents.first() else { return Err(bad("no GGUF file".into())) };
    if paths.len() > 1 {
        let count = split_u32(first, "split.count");
        if count != Some(paths.len() as u32) {
            return Err(bad(format!("{} parts, but split.count says {count:?}", paths.len())));
        }
        for (index, content) in contents.iter().enumerate() {
            let number = split_u32(content, "split.no");
            if number != Some(index as u32) {
                return Err(bad(format!("part {} says it is split.no {number:?}", index + 1)));
            }
        }
    }
    let expected_tensors = split_u32(first, "split.tensors.count");
    let reader = ChainedFiles::new(files).map_err(|e| bad(e.to_string()))?;
    let mut merged = Content {
        magic: first.magic,
        metadata: first.metadata.clone(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    };
    for (content, start) in contents.into_iter().zip(reader.starts.clone()) {
        let base = start + content.tensor_data_offset;
        for (name, mut info) in content.tensor_infos {
            info.offset += base;
            if merged.tensor_infos.insert(name.clone(), info).is_some() {
                return Err(bad(format!("tensor {name} appears in two parts")));
            }
        }
    }
    if let Some(expected) = expected_tensors.filter(|_| paths.len() > 1) {
        if merged.tensor_infos.len() != expected as usize {
            return Err(bad(format!("the parts hold {} tensors, split.tensors.count says {expected}", merged.tensor_infos.len())));
        }
    }
    Ok((merged, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_files_read_and_seek_across_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = [b"abc".as_slice(), b"", b"defgh"]
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let path = dir.path().join(format!("{i}"));
                std::fs::write(&path, bytes).unwrap();
                File::open(path).unwrap()
            })
            .collect();
        let mut chained = ChainedFiles::new(paths).unwrap();
        let mut all = String::new();
        chained.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcdefgh");
        chained.seek(SeekFrom::Start(2)).unwrap();
        let mut two = [0u8; 3];
        chained.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"cde");
        assert_eq!(chained.seek(SeekFrom::End(-1)).unwrap(), 7);
        assert!(chained.seek(SeekFrom::Current(-100)).is_err());
    }
}
