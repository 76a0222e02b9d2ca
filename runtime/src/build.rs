//! `spin build`: runs each component's build command in its work directory.

use anyhow::{Context, Result, bail};

use crate::manifest::{App, Component};

pub fn all(app: &App) -> Result<()> {
    for c in app.components.values() {
        one(app, c)?;
    }
    Ok(())
}

pub fn one(app: &App, c: &Component) -> Result<()> {
    let Some(build) = &c.build else { return Ok(()) };
    let dir = build.workdir.as_ref().map_or_else(|| app.root.clone(), |w| app.root.join(w));
    eprintln!("Building component {} with `{}`", c.id, build.command);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(&dir)
        .status()
        .with_context(|| format!("failed to run the build command of {:?}", c.id))?;
    if !status.success() {
        bail!("build command of component {:?} failed ({status})", c.id);
    }
    Ok(())
}
