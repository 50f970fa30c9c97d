//! Which files of a GGUF repo make one model: the quantisation a tag names, and the
//! parts of a split GGUF (`name-00001-of-00003.gguf` …, as llama.cpp's `gguf-split`
//! writes them and the large Hub repos ship them).

/// `stem-0000N-of-0000M.gguf` → (stem, N, M).
pub fn split_part(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (stem, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count).then_some((stem, index, count))
}

/// Whether the file name `name` (its last path segment) carries `tag` as a whole word:
/// `…-Q4_K_M.gguf`, `…-Q4_K_M-00001-of-00003.gguf`, or inside a folder named after it.
fn has_tag(name: &str, tag: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let tag = tag.to_ascii_lowercase();
    let boundary = |c: Option<char>| c.is_none_or(|c| matches!(c, '-' | '.' | '_' | '/'));
    lower.match_indices(&tag).any(|(at, _)| {
        boundary(lower[..at].chars().next_back()) && boundary(lower[at + tag.len()..].chars().next())
    })
}

/// The files of quantisation `tag` among a repo's `listing`: one `.gguf`, or every part
/// of one split `.gguf` in order. When several models carry the tag (`Q4_K_M` and
/// `UD-Q4_K_M`), the one whose name ends in exactly `-{tag}` wins; otherwise the error
/// lists the candidates, and an unknown tag lists the tags that exist.
pub fn select_quant(listing: &[String], tag: &str) -> Result<Vec<String>, String> {
    let ggufs: Vec<&String> = listing.iter().filter(|f| f.ends_with(".gguf")).collect();
    // Group files into models: a split model's parts share their stem.
    let mut models: std::collections::BTreeMap<String, Vec<(u32, u32, String)>> = Default::default();
    for file in ggufs.iter().filter(|f| has_tag(f, tag)) {
        let (stem, index, count) = match split_part(file) {
            Some((stem, index, count)) => (stem.to_string(), index, count),
            None => (file.trim_end_matches(".gguf").to_string(), 1, 1),
        };
        models.entry(stem).or_default().push((index, count, file.to_string()));
    }
    if models.is_empty() {
        let mut tags: Vec<String> = ggufs
            .iter()
            .filter_map(|f| {
                let stem = split_part(f).map(|(stem, _, _)| stem).unwrap_or(f.trim_end_matches(".gguf"));
                let last = stem.rsplit('/').next().unwrap_or(stem);
                last.rsplit_once('-').map(|(_, tag)| tag.to_string())
            })
            .collect();
        tags.sort();
        tags.dedup();
        return Err(format!("no GGUF file for quantisation {tag:?} (the repo has: {})", tags.join(", ")));
    }
    let chosen = if models.len() == 1 {
        models.into_values().next().expect("one model")
    } else {
        let exact: Vec<_> = models
            .iter()
            .filter(|(stem, _)| {
                let last = stem.rsplit('/').next().unwrap_or(stem);
                last.to_ascii_lowercase().ends_with(&format!("-{}", tag.to_ascii_lowercase()))
                    && !last.to_ascii_lowercase().contains(&format!("-ud-{}", tag.to_ascii_lowercase()))
            })
            .collect();
        match exact.as_slice() {
            [(_, parts)] => (*parts).clone(),
            _ => {
                let names: Vec<&str> = models.keys().map(String::as_str).collect();
                return Err(format!("quantisation {tag:?} is ambiguous here: {}", names.join(", ")));
            }
        }
    };
    let mut parts = chosen;
    parts.sort();
    let count = parts[0].1;
    let complete = parts.len() == count as usize
        && parts.iter().enumerate().all(|(i, (index, of, _))| *index == i as u32 + 1 && *of == count);
    if !complete {
        return Err(format!("the split GGUF for {tag:?} is missing parts: the repo lists {} of {count}", parts.len()));
    }
    Ok(parts.into_iter().map(|(_, _, file)| file).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_file_of_a_tag() {
        let files = listing(&["README.md", "Phi-4-reasoning-Q4_K_M.gguf", "Phi-4-reasoning-Q8_0.gguf", "Phi-4-reasoning-Q4_K_S.gguf"]);
        assert_eq!(select_quant(&files, "Q4_K_M").unwrap(), vec!["Phi-4-reasoning-Q4_K_M.gguf"]);
        assert_eq!(select_quant(&files, "q8_0").unwrap(), vec!["Phi-4-reasoning-Q8_0.gguf"]);
        let error = select_quant(&files, "Q2_K").unwrap_err();
        assert!(error.contains("Q4_K_M") && error.contains("Q8_0"), "{error}");
    }

    #[test]
    fn picks_every_part_of_a_split_file_in_order() {
        let files = listing(&[
            "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00003-of-00003.gguf",
            "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00001-of-00003.gguf",
            "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00002-of-00003.gguf",
            "UD-Q4_K_XL/Kimi-K2-Instruct-UD-Q4_K_XL-00001-of-00002.gguf",
        ]);
        assert_eq!(
            select_quant(&files, "Q4_K_M").unwrap(),
            vec![
                "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00001-of-00003.gguf",
                "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00002-of-00003.gguf",
                "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00003-of-00003.gguf"
            ]
        );
        let missing = listing(&["m-Q4_K_M-00001-of-00003.gguf", "m-Q4_K_M-00003-of-00003.gguf"]);
        assert!(select_quant(&missing, "Q4_K_M").unwrap_err().contains("missing parts"));
    }

    #[test]
    fn prefers_the_plain_tag_over_a_dynamic_variant() {
        let files = listing(&["Qwen3-Coder-UD-Q4_K_M.gguf", "Qwen3-Coder-Q4_K_M.gguf"]);
        assert_eq!(select_quant(&files, "Q4_K_M").unwrap(), vec!["Qwen3-Coder-Q4_K_M.gguf"]);
        assert_eq!(select_quant(&files, "UD-Q4_K_M").unwrap(), vec!["Qwen3-Coder-UD-Q4_K_M.gguf"]);
    }

    #[test]
    fn split_names_parse_strictly() {
        assert_eq!(split_part("a-b-00002-of-00010.gguf"), Some(("a-b", 2, 10)));
        assert_eq!(split_part("a-00000-of-00010.gguf"), None);
        assert_eq!(split_part("a-2-of-10.gguf"), None);
        assert_eq!(split_part("a.gguf"), None);
    }
}
