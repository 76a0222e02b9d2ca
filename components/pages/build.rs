//! Embeds the page and its assets (all UTF-8 text). Each asset's URL carries a hash of its
//! bytes (`/assets/app.3f2a…e1.js`), so assets are cached for a year and a
//! new build is never served stale. The chart library (uPlot) comes from
//! `web/node_modules`, installed by `script/setup` (`npm ci --prefix web`):
//! nothing is fetched from a CDN at run time.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn main() {
    // Read at run time, not `env!`: a build script compiled in one checkout
    // and reused from a moved target directory must still read this one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let web = Path::new(&manifest_dir).join("../../web");
    let assets: [(&str, PathBuf, &str); 4] = [
        ("app.js", web.join("src/app.js"), "text/javascript; charset=utf-8"),
        ("app.css", web.join("src/app.css"), "text/css; charset=utf-8"),
        ("uPlot.iife.min.js", web.join("node_modules/uplot/dist/uPlot.iife.min.js"), "text/javascript; charset=utf-8"),
        ("uPlot.min.css", web.join("node_modules/uplot/dist/uPlot.min.css"), "text/css; charset=utf-8"),
    ];
    let template_path = web.join("src/dashboard.html");
    println!("cargo:rerun-if-changed={}", template_path.display());
    let mut html = std::fs::read_to_string(&template_path).expect("web/src/dashboard.html");
    let mut table = String::from("pub const ASSETS: &[(&str, &str, &str)] = &[\n");
    for (name, path, content_type) in &assets {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(path).unwrap_or_else(|e| {
            panic!("{}: {e}. Run `npm ci --prefix web` (script/setup does).", path.display())
        });
        let hash: String = Sha256::digest(&bytes).iter().take(6).map(|b| format!("{b:02x}")).collect();
        let (stem, ext) = name.rsplit_once('.').expect("an extension");
        let url = format!("/assets/{stem}.{hash}.{ext}");
        html = html.replace(&format!("{{{{{name}}}}}"), &url);
        table.push_str(&format!("    ({url:?}, {content_type:?}, include_str!({:?})),\n", path.canonicalize().unwrap()));
    }
    assert!(!html.contains("{{"), "an asset placeholder in dashboard.html has no file");
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("assets.rs"), table).unwrap();
    std::fs::write(out.join("dashboard.html"), html).unwrap();
}
