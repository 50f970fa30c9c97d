//! The MiniLM benches' sentences (`embeddings`, `plugin_boundary`): the same inputs on
//! every side of a comparison.

/// `count` distinct sentences of 16 to 23 words (about 20 to 30 tokens).
pub fn sentences(count: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "the", "quick", "model", "reads", "a", "long", "document", "about", "rivers", "and", "mountains", "while",
        "engineers", "measure", "how", "fast", "sentences", "become", "vectors", "on", "small", "machines", "every", "day",
    ];
    (0..count)
        .map(|i| {
            let length = 16 + i % 8;
            (0..length).map(|j| WORDS[(i * 7 + j * 5 + j * j) % WORDS.len()]).collect::<Vec<_>>().join(" ") + &format!(" {i}.")
        })
        .collect()
}
