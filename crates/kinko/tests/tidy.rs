//! Tidy checks that keep the architecture honest (docs/ARCHITECTURE.md, "Code map"):
//! dependencies point inward, and the pure crates pull in no I/O.

use std::path::Path;

fn dependencies_of(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|error| panic!("{}: {error}", manifest.display()));
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies
            && let Some((name, _)) = line.split_once(['=', '.'])
            && !name.trim().is_empty()
            && !name.starts_with('#')
        {
            names.push(name.trim().to_owned());
        }
    }
    names
}

#[test]
fn dependencies_point_inward() {
    let forbidden: &[(&str, &[&str])] = &[
        (
            "kinko-core",
            &[
                "kinko-ledger",
                "kinko-store",
                "kinko-web",
                "tokio",
                "rusqlite",
                "postgres",
                "axum",
            ],
        ),
        (
            "kinko-ledger",
            &["kinko-store", "kinko-web", "rusqlite", "postgres", "axum"],
        ),
        ("kinko-store", &["kinko-web", "axum"]),
        ("kinko-web", &["rusqlite", "postgres"]),
        ("kinko-money", &["kinko-web", "axum", "tokio"]),
        (
            "kinko-risk",
            &[
                "kinko-ledger",
                "kinko-store",
                "kinko-identity",
                "kinko-banking",
                "kinko-money",
                "kinko-web",
                "tokio",
                "rusqlite",
                "postgres",
                "axum",
                "reqwest",
                "tracing",
            ],
        ),
        (
            "kinko-qr",
            &[
                "kinko-store",
                "kinko-web",
                "tokio",
                "rusqlite",
                "postgres",
                "axum",
            ],
        ),
        // Cases are opened by banking and money inside their transactions: never the reverse.
        (
            "kinko-cases",
            &["kinko-banking", "kinko-money", "kinko-web", "axum", "tokio"],
        ),
    ];
    for (krate, banned) in forbidden {
        let dependencies = dependencies_of(krate);
        assert!(!dependencies.is_empty(), "{krate}: no dependencies parsed");
        for name in *banned {
            assert!(
                !dependencies.iter().any(|dependency| dependency == name),
                "{krate} must not depend on {name}"
            );
        }
    }
}

/// Failpoints make the process abort on an environment variable: a test tool, never part of
/// what ships. Only `kinko`'s dev-dependencies turn the `failpoints` feature on, so a normal
/// (release) build of the binary resolves `kinko-money` without it.
#[test]
fn a_normal_build_has_no_failpoints() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let tree = |edges: &str| {
        let output = std::process::Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "tree",
                "--offline",
                "-p",
                "kinko",
                "-i",
                "kinko-money",
                "-e",
                edges,
            ])
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let normal = tree("normal,build,features");
    assert!(normal.contains("kinko-money"), "{normal}");
    assert!(!normal.contains("failpoints"), "{normal}");
    // The check can fail: with the tests' dev-dependencies the feature is there.
    assert!(tree("normal,build,dev,features").contains("failpoints"));
}
