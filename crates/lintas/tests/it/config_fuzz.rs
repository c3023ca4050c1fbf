//! A fuzz target for the configuration loader: the example file (every section, every kind
//! of value) mutated the ways people get a file wrong — a line dropped or doubled, a value
//! of the wrong type or out of range, a misspelt key, a broken quote, two listeners on
//! one port — must load or fail without a panic, and every failure must say
//! `file:line:col:` inside the file and, when the file is valid TOML, name the field.
//!
//! Runs for `LINTAS_FUZZ_SECONDS` from `LINTAS_FUZZ_SEED` ([`testkit::fuzz`]).

use std::path::Path;

use lintas::config::parse;
use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;
use testkit::fuzz::http1::pick;

const EXAMPLE: &str = include_str!("../../../../lintas.example.toml");

/// Values that are wrong somewhere: other types, edges of ranges, bad durations and
/// addresses, and text that needs escaping.
const VALUES: [&str; 18] = [
    "0",
    "-1",
    "4294967296",
    "1.5",
    "true",
    "\"\"",
    "\"0s\"",
    "\"1x\"",
    "\"-5s\"",
    "\"99999999999h\"",
    "\"127.0.0.1:9000\"",
    "\"127.0.0.1:99999\"",
    "\"not an address\"",
    "\"é🍵\"",
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ name = \"x\" }",
];

/// One mutation of one line (or of the line list).
fn mutate(rng: &mut StdRng, lines: &mut Vec<String>) {
    let at = rng.random_range(0..lines.len());
    let line = lines[at].clone();
    match rng.random_range(0..8) {
        0 => drop(lines.remove(at)),
        1 => lines.insert(at, line),
        // A value replaced.
        2 | 3 => {
            if let Some(eq) = line.find(" = ") {
                lines[at] = format!("{} = {}", &line[..eq], pick(rng, &VALUES));
            }
        }
        // A key misspelt: two neighbouring characters swapped.
        4 => {
            let chars: Vec<char> = line.chars().collect();
            if chars.len() > 2 {
                let i = rng.random_range(0..chars.len() - 1);
                let mut chars = chars;
                chars.swap(i, i + 1);
                lines[at] = chars.into_iter().collect();
            }
        }
        // A quote or bracket dropped or added.
        5 => {
            let c = *pick(rng, &['"', '[', ']', '{', '}', '=', ',', '#']);
            lines[at] = match line.find(c) {
                Some(i) if rng.random_bool(0.5) => format!("{}{}", &line[..i], &line[i + 1..]),
                _ => {
                    let mut chars: Vec<char> = line.chars().collect();
                    let i = rng.random_range(0..=chars.len());
                    chars.insert(i, c);
                    chars.into_iter().collect()
                }
            };
        }
        // A listener moved onto another's address.
        6 => {
            if line.starts_with("listen = ") {
                lines[at] = (*pick(
                    rng,
                    &["listen = \"127.0.0.1:9000\"", "listen = \"0.0.0.0:8080\""],
                ))
                .into();
            }
        }
        // The file cut short.
        _ => lines.truncate(at),
    }
}

#[test]
fn every_load_error_names_file_line_column_and_key() {
    let mut fuzz = Fuzz::from_env("config loader");
    let mut rng = fuzz.rng();
    let base: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
    let (mut loaded, mut refused) = (0u64, 0u64);
    while fuzz.next_case() {
        let mut lines = base.clone();
        for _ in 0..rng.random_range(1..4) {
            if !lines.is_empty() {
                mutate(&mut rng, &mut lines);
            }
        }
        let text = lines.join("\n");
        let Err(e) = parse(Path::new("lintas.toml"), text.clone()) else {
            loaded += 1;
            continue;
        };
        refused += 1;
        let valid_toml = text.parse::<toml::Table>().is_ok();
        let shown = e.to_string();
        let at = || format!("{}: error\n{shown}\nfor the file\n{text}", fuzz.at());
        assert!(!e.problems.is_empty(), "{}", at());
        assert_eq!(shown.lines().count(), e.problems.len(), "{}", at());
        for (p, shown) in e.problems.iter().zip(shown.lines()) {
            let line = text.split('\n').nth(p.position.line.saturating_sub(1));
            let line = line
                .unwrap_or_else(|| panic!("line {} is not in the file: {}", p.position.line, at()));
            assert!(
                p.position.col >= 1 && p.position.col <= line.chars().count() + 1,
                "column {} is not on line {}: {}",
                p.position.col,
                p.position.line,
                at()
            );
            let prefix = format!("lintas.toml:{}:{}: ", p.position.line, p.position.col);
            assert!(shown.starts_with(&prefix), "{}", at());
            // In a valid TOML file every problem is about a field: the key is named before
            // the message, or (an unknown or missing field) in it.
            match &p.key {
                Some(key) => assert!(shown.starts_with(&format!("{prefix}{key}: ")), "{}", at()),
                None if valid_toml => {
                    assert!(p.message.contains(" field `"), "no field named: {}", at())
                }
                None => {}
            }
            assert!(!p.message.is_empty(), "{}", at());
        }
    }
    eprintln!("config loader: {loaded} mutated files loaded, {refused} refused with positions");
}
