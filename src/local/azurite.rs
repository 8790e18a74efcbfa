//! Azurite, the official storage emulator, started on free loopback ports for the local
//! run and the tests. It is installed from npm at the version pinned in `package.json`.

use super::LocalError;
use crate::config::StorageSettings;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running Azurite.
pub struct Azurite {
    child: Child,
    /// Blob service port.
    pub blob_port: u16,
    /// Queue service port.
    pub queue_port: u16,
    table_port: u16,
    dir: PathBuf,
}

/// Finds the Azurite launcher: `$AZURITE_BIN`, else `node_modules/.bin/azurite` in the
/// working directory or in this crate's source tree.
pub(crate) fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        return Some(PathBuf::from(p));
    }
    let rel = Path::new("node_modules/.bin/azurite");
    [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ]
    .into_iter()
    .flatten()
    .map(|d| d.join(rel))
    .find(|p| p.exists())
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Azurite {
    /// Starts Azurite keeping its data in `dir`.
    ///
    /// The ports are picked free and then handed to Azurite, so another process can take
    /// one in between (an outgoing connection's ephemeral port, on a busy machine); a
    /// start that fails is tried again on new ports.
    pub async fn start(dir: &Path) -> Result<Azurite, LocalError> {
        let mut last = None;
        for _ in 0..3 {
            let (blob_port, queue_port, table_port) = (free_port()?, free_port()?, free_port()?);
            let child = spawn(dir, blob_port, queue_port, table_port)?;
            let mut az = Azurite {
                child,
                blob_port,
                queue_port,
                table_port,
                dir: dir.to_path_buf(),
            };
            match az.wait_ready().await {
                Ok(()) => return Ok(az),
                Err(e) => {
                    let _ = az.child.kill().await;
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts were made"))
    }

    /// Stops and starts it again on the same ports and data (a storage outage).
    ///
    /// The stop is graceful (SIGINT, as Ctrl-C): Azurite keeps its metadata in memory and
    /// writes it out periodically and on shutdown, so a SIGKILL would model a storage
    /// account losing data, which is not the outage under test.
    pub async fn restart(&mut self, down_for: Duration) -> Result<(), LocalError> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        tokio::time::sleep(down_for).await;
        self.child = spawn(&self.dir, self.blob_port, self.queue_port, self.table_port)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), LocalError> {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalError::Azurite(format!(
                    "exited during start-up with {status}"
                )));
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.blob_port) && up(self.queue_port) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LocalError::Azurite("did not listen within 30 s".into()))
    }

    /// The emulator's process id (for measuring what it costs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Storage settings that reach this instance.
    pub fn storage(&self) -> StorageSettings {
        StorageSettings::dev_storage(
            &format!("http://127.0.0.1:{}/devstoreaccount1", self.queue_port),
            &format!("http://127.0.0.1:{}/devstoreaccount1", self.blob_port),
        )
        .expect("loopback Azurite URLs are valid")
    }
}

fn spawn(dir: &Path, blob: u16, queue: u16, table: u16) -> Result<Child, LocalError> {
    let bin = find_binary().ok_or_else(|| {
        LocalError::Azurite(
            "not installed: run `npm ci` in the repository (it installs the pinned Azurite)".into(),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    Command::new(bin)
        // Azurite's defaults, as docs/deploy.md starts it: no flag relaxes what it checks.
        .arg("--silent")
        .arg("--location")
        .arg(dir)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--queueHost",
            "127.0.0.1",
            "--tableHost",
            "127.0.0.1",
        ])
        .args([
            "--blobPort",
            &blob.to_string(),
            "--queuePort",
            &queue.to_string(),
            "--tablePort",
            &table.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LocalError::Azurite(format!("could not start: {e}")))
}
