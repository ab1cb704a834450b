//! The server in the test's own process (`hlsgate::server::serve` on listeners bound here), for
//! rule tests that only talk HTTP: no child process, no ready line to wait for. What a process
//! owns (signals, reloads, exit codes, logs) stays with [`Server`], which runs the binary.

use super::*;

use std::sync::Arc;

use hlsgate::server::shutdown::{self, Trigger};
use hlsgate::server::{self as gate_server, App};
use tokio::net::TcpListener;

/// A server running on the test's runtime until dropped (or [`InProcess::stop`]).
pub struct InProcess {
    viewers: SocketAddr,
    admin: SocketAddr,
    stop: Trigger,
    // Dropping a trigger fires it: held so the drain is never cut short by accident.
    _hurry: Trigger,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
    dir: TempDir,
}

impl InProcess {
    /// Starts with this config text (relative paths against `dir`), which `dir` outlives.
    pub async fn start(dir: TempDir, config: &str) -> InProcess {
        let config = hlsgate::config::parse(config, dir.path())
            .unwrap_or_else(|e| panic!("config refused: {e}\n{config}"));
        let viewers = TcpListener::bind(config.listen).await.expect("bind the viewer port");
        let admin = TcpListener::bind(config.admin_listen).await.expect("bind the admin port");
        let (viewer_addr, admin_addr) = (viewers.local_addr().unwrap(), admin.local_addr().unwrap());
        let app: Arc<App> = App::start(&config, &viewer_addr.to_string()).await.expect("start the app");
        let (stop, shutdown) = shutdown::channel();
        let (hurry, hurried) = shutdown::channel();
        let task =
            tokio::spawn(
                async move { gate_server::serve(viewers, admin, app, &config, shutdown, hurried).await },
            );
        InProcess { viewers: viewer_addr, admin: admin_addr, stop, _hurry: hurry, task: Some(task), dir }
    }

    pub fn viewer_addr(&self) -> SocketAddr {
        self.viewers
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The temp dir the config's streams live in.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Stops accepting, drains, and returns what `serve` returned.
    pub async fn stop(mut self) -> io::Result<()> {
        self.stop.fire();
        match self.task.take() {
            Some(task) => task.await.expect("the server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.fire();
    }
}

/// Whatever serves viewers on an address: the binary ([`Server`]) or [`InProcess`].
pub trait Serving {
    fn viewer_addr(&self) -> SocketAddr;
}

impl Serving for Server {
    fn viewer_addr(&self) -> SocketAddr {
        Server::viewer_addr(self)
    }
}

impl Serving for InProcess {
    fn viewer_addr(&self) -> SocketAddr {
        InProcess::viewer_addr(self)
    }
}

impl Setup {
    /// As [`Setup::start`], in-process.
    pub async fn start_in_process(self, top: &str, streams: &str) -> InProcess {
        let config = config_text(&self.streams(), top, streams);
        InProcess::start(self.dir, &config).await
    }
}
