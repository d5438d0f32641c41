//! doveadm-director(1) lists every command `doveadm director` shows in its usage, with the
//! same options.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_usage_and_the_man_page_list_the_same_commands_and_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_doveadm"))
        .arg("director")
        .output()
        .unwrap();
    let usage =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let page = testkit::render_man_page("man1/doveadm-director.1");
    let commands = testkit::man_section(&page, "COMMANDS", "EXIT STATUS");
    let mut seen = 0;
    for line in usage.lines().filter(|l| l.starts_with("  ")) {
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            continue;
        };
        seen += 1;
        // An entry starts at its command word and runs until the next entry.
        let start = commands
            .lines()
            .position(|l| l.split_whitespace().next() == Some(command))
            .unwrap_or_else(|| panic!("doveadm-director(1) lacks {command}"));
        let entry: String = commands
            .lines()
            .skip(start)
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        for option in words
            .map(|w| w.trim_matches(['[', ']']))
            .filter(|w| w.starts_with('-'))
        {
            assert!(
                entry.contains(option),
                "{command}: {option} not in {entry:?}"
            );
        }
    }
    assert!(seen >= 12, "{usage}");
}
