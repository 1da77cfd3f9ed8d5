//! The Docker Engine API over its Unix socket: Docker's own, and the compatible API
//! Podman serves (`podman system service`, or the `podman.socket` unit). The daemon
//! asks for the containers and follows the event stream; HTTP/1.1, nothing more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::{Container, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{socket}: {source}")]
    Io {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{socket}: {what}")]
    Protocol { socket: String, what: String },
    #[error("{socket}: {path}: {source}")]
    Json {
        socket: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One Engine API endpoint.
#[derive(Clone, Debug)]
pub struct Engine {
    pub socket: PathBuf,
}

/// What the engine is: Docker or Podman, and whether it makes containers' cgroups itself
/// (the cgroupfs driver) or has systemd make them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    pub runtime: Runtime,
    pub cgroupfs: bool,
}

/// A reply's body as a stream: chunked, sized, or up to the end.
struct Body {
    reader: BufReader<UnixStream>,
    chunked: bool,
    /// Bytes left in the current chunk (or in a sized body).
    left: Option<usize>,
    done: bool,
}

impl Body {
    /// The next piece of the body, `None` at its end.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if !self.chunked {
            let mut buf = Vec::new();
            match self.left {
                Some(n) => {
                    buf.resize(n, 0);
                    self.reader.read_exact(&mut buf).await?;
                }
                None => {
                    self.reader.read_to_end(&mut buf).await?;
                }
            }
            self.done = true;
            return Ok(Some(buf));
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            self.done = true;
            return Ok(None);
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            self.done = true;
            return Ok(None);
        }
        let mut buf = vec![0; size + 2];
        self.reader.read_exact(&mut buf).await?;
        buf.truncate(size);
        Ok(Some(buf))
    }

    async fn all(mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await? {
            out.extend(piece);
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Version {
    #[serde(rename = "Components", default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "Name", default)]
    name: String,
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "CgroupDriver", default)]
    cgroup_driver: String,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "State", default)]
    state: String,
}

#[derive(Deserialize)]
struct Inspected {
    #[serde(rename = "HostConfig", default)]
    host_config: Option<HostConfig>,
}

#[derive(Deserialize)]
struct HostConfig {
    #[serde(rename = "CgroupParent", default)]
    cgroup_parent: Option<String>,
}

/// One event of the stream: what happened to which container.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(rename = "id", default)]
    pub id: String,
}

/// The event stream of one engine.
pub struct Events {
    body: Body,
    pending: Vec<u8>,
    socket: String,
}

impl Events {
    /// The next container event; `None` when the engine closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, DockerError> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|source| {
                    DockerError::Json {
                        socket: self.socket.clone(),
                        path: "/events".into(),
                        source,
                    }
                });
            }
            match self.body.next().await {
                Ok(Some(piece)) => self.pending.extend(piece),
                Ok(None) => return Ok(None),
                Err(source) => {
                    return Err(DockerError::Io {
                        socket: self.socket.clone(),
                        source,
                    });
                }
            }
        }
    }
}

impl Engine {
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    fn shown(&self) -> String {
        self.socket.display().to_string()
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> DockerError + '_ {
        move |source| DockerError::Io {
            socket: self.shown(),
            source,
        }
    }

    async fn get(&self, path: &str) -> Result<Body, DockerError> {
        let mut s = UnixStream::connect(&self.socket).await.map_err(self.io())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(self.io())?;
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).await.map_err(self.io())?;
        let code = status
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut chunked, mut length) = (false, None);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.map_err(self.io())? == 0 {
                break;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if k == "content-length" {
                    length = v.parse().ok();
                }
            }
        }
        let body = Body {
            reader,
            chunked,
            left: length,
            done: false,
        };
        if code != "200" {
            let text = body.all().await.unwrap_or_default();
            return Err(DockerError::Protocol {
                socket: self.shown(),
                what: format!(
                    "GET {path}: HTTP {code}: {}",
                    String::from_utf8_lossy(&text).trim()
                ),
            });
        }
        Ok(body)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, DockerError> {
        let bytes = self.get(path).await?.all().await.map_err(self.io())?;
        serde_json::from_slice(&bytes).map_err(|source| DockerError::Json {
            socket: self.shown(),
            path: path.to_owned(),
            source,
        })
    }

    /// Docker or Podman, and its cgroup driver.
    pub async fn info(&self) -> Result<EngineInfo, DockerError> {
        let v: Version = self.json("/version").await?;
        let info: Info = self.json("/info").await?;
        let runtime = if v.components.iter().any(|c| c.name.contains("Podman")) {
            Runtime::Podman
        } else {
            Runtime::Docker
        };
        Ok(EngineInfo {
            runtime,
            // Podman's compatible API leaves the driver empty; without systemd it is cgroupfs.
            cgroupfs: info.cgroup_driver == "cgroupfs"
                || (info.cgroup_driver.is_empty() && !Path::new("/run/systemd/system").exists()),
        })
    }

    /// Every container the engine knows, running or not.
    pub async fn containers(&self, info: EngineInfo) -> Result<Vec<Container>, DockerError> {
        let listed: Vec<Listed> = self.json("/containers/json?all=1").await?;
        let mut out = Vec::with_capacity(listed.len());
        for l in listed {
            let created = l.state == "created" || l.state == "configured";
            // Where a created container's cgroup will be: asked for only then, as only
            // then can the daemon still make it first.
            let cgroup = if created && info.cgroupfs {
                let i: Option<Inspected> =
                    self.json(&format!("/containers/{}/json", l.id)).await.ok();
                let parent = i
                    .and_then(|i| i.host_config)
                    .and_then(|h| h.cgroup_parent)
                    .filter(|p| !p.is_empty());
                Some(cgroupfs_path(info.runtime, parent.as_deref(), &l.id))
            } else {
                None
            };
            out.push(Container {
                runtime: info.runtime,
                name: l
                    .names
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                id: l.id,
                image: l.image,
                labels: l.labels.unwrap_or_default(),
                cgroup,
                created,
            });
        }
        Ok(out)
    }

    /// The engine's container events from now on.
    pub async fn events(&self) -> Result<Events, DockerError> {
        // filters={"type":["container"]}
        let body = self
            .get("/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D")
            .await?;
        Ok(Events {
            body,
            pending: Vec::new(),
            socket: self.shown(),
        })
    }
}

/// Where the cgroupfs driver puts a container's cgroup, below the cgroup2 mount:
/// Docker `/docker/<id>`, Podman `/libpod_parent/libpod-<id>`, below the parent the
/// container was given, if any.
#[must_use]
pub fn cgroupfs_path(runtime: Runtime, parent: Option<&str>, id: &str) -> String {
    let (default_parent, leaf) = match runtime {
        Runtime::Podman => ("/libpod_parent", format!("libpod-{id}")),
        _ => ("/docker", id.to_owned()),
    };
    let parent = parent.unwrap_or(default_parent).trim_end_matches('/');
    let parent = parent.trim_start_matches('/');
    format!("/{parent}/{leaf}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_layouts() {
        assert_eq!(cgroupfs_path(Runtime::Docker, None, "ab"), "/docker/ab");
        assert_eq!(
            cgroupfs_path(Runtime::Podman, None, "ab"),
            "/libpod_parent/libpod-ab"
        );
        assert_eq!(
            cgroupfs_path(Runtime::Docker, Some("/tenants/a/"), "ab"),
            "/tenants/a/ab"
        );
    }

    #[test]
    fn events_and_listings_decode() {
        let e: Event = serde_json::from_str(
            r#"{"status":"create","id":"ab","Type":"container","Action":"create","Actor":{"ID":"ab","Attributes":{"app":"y","name":"p3"}},"time":1,"timeNano":1}"#,
        )
        .expect("event");
        assert_eq!((e.action.as_str(), e.id.as_str()), ("create", "ab"));
        let l: Vec<Listed> = serde_json::from_str(
            r#"[{"Id":"ab","Names":["/t1"],"Image":"zt-bb:1","Labels":{"app":"web"},"State":"running"},{"Id":"cd","Names":["/p2"],"Image":"","Labels":null,"State":"created"}]"#,
        )
        .expect("listing");
        assert_eq!(l[0].names, ["/t1"]);
        assert!(l[1].labels.is_none());
    }
}
