//! Without a cluster, the kind end-to-end script and the CI workflow can still be checked:
//! they lint clean (shellcheck, actionlint, hadolint for the Dockerfile) and every
//! repository path they name exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    root().join(".venv/bin").join(name)
}

fn lint(linter: &str, args: &[&str]) {
    let path = tool(linter);
    let out = Command::new(&path)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{} not runnable ({e}); run .ci/venv.sh", path.display()));
    assert!(
        out.status.success(),
        "{linter} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scripts_workflow_and_dockerfile_lint_clean() {
    lint(
        "shellcheck",
        &[
            "tests/e2e/kind.sh",
            "tests/run.sh",
            "tests/acceptance/glanceclient.sh",
            "tests/acceptance/defaults.sh",
            ".ci/run",
            ".ci/venv.sh",
        ],
    );
    lint("actionlint", &[".github/workflows/ci.yml"]);
    lint("hadolint", &["Dockerfile"]);
}

/// Repository paths mentioned in `text`: words starting with a top-level directory of
/// the project.
fn mentioned_paths(text: &str) -> Vec<String> {
    const TOP: &[&str] = &[
        ".ci", "tests", "config", "samples", "crds", "src", "benches",
    ];
    text.split(|c: char| c.is_whitespace() || "\"'`(){}[]=,;:|&<>$".contains(c))
        .map(|w| {
            w.strip_prefix("./")
                .unwrap_or(w)
                .trim_end_matches(['.', '/'])
        })
        .filter(|w| {
            TOP.iter()
                .any(|t| *w == *t || w.starts_with(&format!("{t}/")))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_e2e_script_and_workflow_name_only_files_that_exist() {
    let mut checked = Vec::new();
    for file in [
        "tests/e2e/kind.sh",
        ".github/workflows/ci.yml",
        "Dockerfile",
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect("readable");
        for path in mentioned_paths(&text) {
            assert!(
                root().join(&path).exists(),
                "{file} names {path}, which does not exist"
            );
            checked.push(path);
        }
    }
    for expected in [
        "tests/e2e/kind.sh",
        ".ci/run",
        "config/default",
        "samples/image-cache",
        "src",
    ] {
        assert!(
            checked.iter().any(|p| p == expected),
            "{expected} was checked: {checked:?}"
        );
    }
    // The script builds the image from the Dockerfile at the root and loads the tag that
    // config/manager deploys.
    let script = std::fs::read_to_string(root().join("tests/e2e/kind.sh")).expect("script");
    let manager =
        std::fs::read_to_string(root().join("config/manager/manager.yaml")).expect("manager");
    assert!(script.contains("docker build -t \"${image}\" ."));
    assert!(
        script.contains("image=\"glance-operator:latest\"")
            && manager.contains("image: glance-operator:latest")
    );
}
