//! Docker Swarm names from the Docker Engine API over its unix socket (`--docker.host`).
//!
//! Swarm balances with fwmark services: in `ingress_sbox` (the routing mesh) and in one `lb_*`
//! namespace per overlay network (service VIPs). Each dockerd numbers its marks from 256, in
//! memory, so a mark means a different service on every node and may change when dockerd
//! restarts: only this node's dockerd can say which service a mark is. `GET
//! /networks/{id}?verbose=true` (answered on workers too) gives, per service on that network,
//! its `LocalLBIndex` (this node's mark) and its tasks (`Name`, `EndpointIP`, `Info["Host
//! IP"]`). `GET /containers/json` adds the container of each local task, and `GET /services`
//! (managers only; a worker's refusal is not an error) the service ids and stack labels.
//!
//! Only read-only GET requests are made. [`spawn`] runs the refresh task: it refreshes when the
//! collection loop reports that the fwmark services or their real servers changed, when
//! something stays unnamed, and every `--docker.refresh-interval`. When the Engine API cannot be
//! read the names are dropped (never left stale), [`DockerStatus`] says why, and one log line
//! is written when the reason changes.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::watch;

use super::{DockerStatus, Name, NetnsNames, Source, intern};
use crate::model::{IpvsState, ServiceAddress, Snapshot};

/// Deadline of one Engine API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two refreshes, whatever asks for them.
const MIN_GAP: Duration = Duration::from_secs(1);

/// While the Engine API cannot be read, or something stays unnamed: try again this often.
const RETRY: Duration = Duration::from_secs(5);

/// Whether the daemon names namespace `netns` after Docker: `ingress_sbox` and `lb_*`, the
/// file names Docker gives its load-balancer namespaces.
pub fn is_docker_netns(netns: &str) -> bool {
    netns == INGRESS_NETNS || netns.starts_with("lb_")
}

const INGRESS_NETNS: &str = "ingress_sbox";

/// The namespace file name of network `id`'s load balancer: Docker names it `lb_` and the
/// start of the id, 12 characters in all.
fn lb_netns(id: &str) -> String {
    let mut s = format!("lb_{id}");
    s.truncate(12);
    s
}

/// The Engine API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// Connecting to the socket failed.
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A request failed on the way (connection closed, malformed HTTP).
    #[error("GET {path}: {message}")]
    Http {
        /// The request path.
        path: String,
        /// What happened.
        message: String,
    },
    /// An answer other than 200.
    #[error("GET {path}: HTTP {status}: {body}")]
    Status {
        /// The request path.
        path: String,
        /// The status code.
        status: u16,
        /// The start of Docker's message.
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("GET {path}: unexpected answer: {message}")]
    Decode {
        /// The request path.
        path: String,
        /// serde_json's message.
        message: String,
    },
    /// No answer in time.
    #[error("GET {path}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The request path.
        path: String,
    },
}

impl Unreachable {
    /// The `reason` label: `socket_missing`, `permission_denied`, `connection_refused`,
    /// `connect_failed`, `timeout`, `http_error`, `bad_response`.
    pub fn reason(&self) -> &'static str {
        match self {
            Unreachable::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => "socket_missing",
                std::io::ErrorKind::PermissionDenied => "permission_denied",
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                _ => "connect_failed",
            },
            Unreachable::Http { .. } | Unreachable::Status { .. } => "http_error",
            Unreachable::Decode { .. } => "bad_response",
            Unreachable::Timeout { .. } => "timeout",
        }
    }
}

/// One HTTP/1.1 connection to the Engine API.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(socket: &Path) -> Result<Client, Unreachable> {
        let connect = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| Unreachable::Connect {
                    socket: socket.to_path_buf(),
                    source,
                })?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Unreachable::Http {
                    path: "/".into(),
                    message: e.to_string(),
                })?;
            // Ends when the client is dropped.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Client { sender })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| Unreachable::Timeout { path: "/".into() })?
    }

    /// `GET path`, the answer decoded from JSON.
    async fn get<T: serde::de::DeserializeOwned>(&mut self, path: &str) -> Result<T, Unreachable> {
        let http = |e: &dyn std::fmt::Display| Unreachable::Http {
            path: path.to_string(),
            message: e.to_string(),
        };
        let request = async {
            self.sender.ready().await.map_err(|e| http(&e))?;
            let req = hyper::Request::get(path)
                .header(hyper::header::HOST, "docker")
                .body(Empty::<Bytes>::new())
                .map_err(|e| http(&e))?;
            let resp = self.sender.send_request(req).await.map_err(|e| http(&e))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http(&e))?
                .to_bytes();
            Ok::<_, Unreachable>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| Unreachable::Timeout {
                path: path.to_string(),
            })??;
        if status != hyper::StatusCode::OK {
            let mut text = String::from_utf8_lossy(&body).trim().to_string();
            text.truncate(200);
            return Err(Unreachable::Status {
                path: path.to_string(),
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Unreachable::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }
}

/// `GET /networks` item.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSummary {
    id: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    scope: String,
}

/// `GET /networks/{id}?verbose=true`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkDetail {
    id: String,
    #[serde(default)]
    ingress: bool,
    #[serde(default)]
    services: Option<BTreeMap<String, ServiceInfo>>,
}

/// One entry of a network's `Services` map.
#[derive(Debug, Deserialize)]
struct ServiceInfo {
    #[serde(rename = "LocalLBIndex", default)]
    local_lb_index: u32,
    #[serde(rename = "Tasks", default)]
    tasks: Option<Vec<TaskInfo>>,
}

/// One backend task of a service on a network.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskInfo {
    #[serde(default)]
    name: String,
    #[serde(rename = "EndpointIP", default)]
    endpoint_ip: String,
    #[serde(default)]
    info: Option<BTreeMap<String, String>>,
}

/// `GET /containers/json` item.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Container {
    id: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// `GET /services` item (managers only).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmService {
    #[serde(rename = "ID")]
    id: String,
    spec: ServiceSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceSpec {
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

const STACK_LABEL: &str = "com.docker.stack.namespace";

/// What Docker says about this node's load balancers, ready to name IPVS services.
#[derive(Debug, Default)]
pub struct DockerNames {
    /// netns name -> mark -> the service and its tasks by address.
    netns: HashMap<String, HashMap<u32, Named>>,
}

#[derive(Debug)]
struct Named {
    service: Arc<Name>,
    tasks: HashMap<IpAddr, Arc<Name>>,
}

/// The labels of a service and its tasks that do not come from the network inspect.
#[derive(Debug, Default, Clone)]
struct ServiceMeta {
    id: String,
    stack: String,
}

/// The container and node of a local task.
#[derive(Debug, Default, Clone)]
struct TaskMeta {
    container_id: String,
    service_id: String,
    stack: String,
}

impl DockerNames {
    /// Builds the names from the Engine API's answers.
    fn build(
        networks: Vec<NetworkDetail>,
        containers: Vec<Container>,
        services: Vec<SwarmService>,
    ) -> DockerNames {
        let mut meta: HashMap<String, ServiceMeta> = services
            .into_iter()
            .map(|s| {
                let stack = s
                    .spec
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(STACK_LABEL).cloned())
                    .unwrap_or_default();
                (s.spec.name, ServiceMeta { id: s.id, stack })
            })
            .collect();
        let mut tasks: HashMap<String, TaskMeta> = HashMap::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let l = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let task = l("com.docker.swarm.task.name");
            if task.is_empty() {
                continue;
            }
            let m = TaskMeta {
                container_id: c.id,
                service_id: l("com.docker.swarm.service.id"),
                stack: l(STACK_LABEL),
            };
            // A worker cannot list services: learn the id and stack from a local task.
            meta.entry(l("com.docker.swarm.service.name"))
                .or_insert_with(|| ServiceMeta {
                    id: m.service_id.clone(),
                    stack: m.stack.clone(),
                });
            tasks.insert(task, m);
        }
        let mut out = DockerNames::default();
        for n in networks {
            let netns = if n.ingress {
                INGRESS_NETNS.to_string()
            } else {
                lb_netns(&n.id)
            };
            let by_mark = out.netns.entry(netns).or_default();
            for (service, info) in n.services.unwrap_or_default() {
                // Services without a load balancer here (DNSRR) have no mark.
                if info.local_lb_index == 0 || service.is_empty() {
                    continue;
                }
                let m = meta.get(&service).cloned().unwrap_or_default();
                let name = Arc::new(Name {
                    source: "docker",
                    name: service.clone(),
                    namespace: m.stack.clone(),
                    labels: vec![(intern("service_id"), m.id.clone())],
                });
                let mut by_addr = HashMap::new();
                for t in info.tasks.unwrap_or_default() {
                    let Ok(addr) = t.endpoint_ip.parse::<IpAddr>() else {
                        continue;
                    };
                    let local = tasks.get(&t.name).cloned().unwrap_or_default();
                    let (slot, task_id) = task_parts(&service, &t.name);
                    let node = t
                        .info
                        .as_ref()
                        .and_then(|i| i.get("Host IP").cloned())
                        .unwrap_or_default();
                    by_addr.insert(
                        addr,
                        Arc::new(Name {
                            source: "docker",
                            name: t.name.clone(),
                            namespace: m.stack.clone(),
                            labels: vec![
                                (intern("container_id"), local.container_id),
                                (intern("node"), node),
                                (intern("service"), service.clone()),
                                (intern("slot"), slot),
                                (intern("task_id"), task_id),
                            ],
                        }),
                    );
                }
                by_mark.insert(
                    info.local_lb_index,
                    Named {
                        service: name,
                        tasks: by_addr,
                    },
                );
            }
        }
        out.netns.retain(|_, m| !m.is_empty());
        out
    }
}

/// Slot and task id of a task named `SERVICE.SLOT.TASKID` (replicated) or
/// `SERVICE.NODEID.TASKID` (global: no slot).
fn task_parts(service: &str, task: &str) -> (String, String) {
    let Some(rest) = task.strip_prefix(service).and_then(|r| r.strip_prefix('.')) else {
        return (String::new(), String::new());
    };
    match rest.split_once('.') {
        Some((slot, id)) if slot.bytes().all(|b| b.is_ascii_digit()) => {
            (slot.to_string(), id.to_string())
        }
        Some((_, id)) => (String::new(), id.to_string()),
        None => (String::new(), rest.to_string()),
    }
}

impl Source for DockerNames {
    fn name(&self, netns: &str, ipvs: &IpvsState, out: &mut NetnsNames) {
        let Some(marks) = self.netns.get(netns) else {
            return;
        };
        for (si, svc) in ipvs.services.iter().enumerate() {
            let ServiceAddress::Fwmark { mark } = svc.address else {
                continue;
            };
            let Some(named) = marks.get(&mark) else {
                continue;
            };
            out.services.push((si, named.service.clone()));
            for (di, d) in svc.destinations.iter().enumerate() {
                if let Some(t) = named.tasks.get(&d.address) {
                    out.destinations.push((si, di, t.clone()));
                }
            }
        }
    }
}

/// Reads everything [`DockerNames`] needs from the Engine API at `socket`.
pub async fn fetch(socket: &Path) -> Result<DockerNames, Unreachable> {
    let mut c = Client::connect(socket).await?;
    let list: Vec<NetworkSummary> = c.get("/networks").await?;
    let mut networks = Vec::new();
    for n in list
        .iter()
        .filter(|n| n.driver == "overlay" && n.scope == "swarm")
    {
        match c
            .get::<NetworkDetail>(&format!("/networks/{}?verbose=true", n.id))
            .await
        {
            Ok(d) => networks.push(d),
            // Removed between the list and the inspect.
            Err(Unreachable::Status { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let containers: Vec<Container> = c.get("/containers/json").await?;
    // 503 on workers ("This node is not a swarm manager"): their local tasks give the labels.
    let services: Vec<SwarmService> = match c.get("/services").await {
        Ok(s) => s,
        Err(Unreachable::Status { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(DockerNames::build(networks, containers, services))
}

/// What the collection loop tells the refresh task after each collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Whether any Docker load-balancer namespace is collected at all.
    pub active: bool,
    /// A hash of the Docker namespaces' fwmark services and their real servers.
    pub key: u64,
    /// Whether some of them have no Docker name.
    pub unnamed: bool,
}

/// What the collection loop should tell the refresh task about `snapshot`, given the names
/// it resolved for it.
pub fn observe(
    snapshot: &Snapshot,
    names: &BTreeMap<String, NetnsNames>,
    docker: Option<&DockerNames>,
) -> Observed {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut active = false;
    let mut unnamed = false;
    for ns in &snapshot.namespaces {
        if !is_docker_netns(&ns.netns.name) {
            continue;
        }
        active = true;
        let Ok(ipvs) = &ns.ipvs else { continue };
        ns.netns.name.hash(&mut h);
        let named = names.get(&ns.netns.name);
        let docker_named = |si: usize| {
            named.is_some_and(|n| {
                n.services
                    .iter()
                    .any(|(i, x)| *i == si && x.source == "docker")
            })
        };
        for (si, svc) in ipvs.services.iter().enumerate() {
            let ServiceAddress::Fwmark { mark } = svc.address else {
                continue;
            };
            mark.hash(&mut h);
            for d in &svc.destinations {
                d.address.hash(&mut h);
            }
            let dests_named = named.map_or(0, |n| {
                n.destinations
                    .iter()
                    .filter(|(i, _, x)| *i == si && x.source == "docker")
                    .count()
            });
            if docker.is_some() && (!docker_named(si) || dests_named < svc.destinations.len()) {
                unnamed = true;
            }
        }
    }
    Observed {
        active,
        key: h.finish(),
        unnamed,
    }
}

/// The refresh task's latest result.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The names, `None` before the first refresh and while Docker cannot be read.
    pub names: Option<Arc<DockerNames>>,
    /// The state for the metrics, `None` before the first refresh.
    pub status: Option<DockerStatus>,
}

/// The collection loop's end of the refresh task.
#[derive(Debug)]
pub struct Handle {
    observed: watch::Sender<Observed>,
    published: watch::Receiver<Published>,
}

impl Handle {
    /// Reports a collection's Docker state (refreshes when it changed).
    pub fn observe(&self, o: Observed) {
        self.observed.send_if_modified(|old| {
            let changed = *old != o;
            *old = o;
            changed
        });
    }

    /// The latest names and state.
    pub fn latest(&self) -> Published {
        self.published.borrow().clone()
    }
}

/// Starts the refresh task for the Engine API at `socket`, refreshing at least every
/// `interval` while a Docker namespace is collected.
pub fn spawn(socket: PathBuf, interval: Duration) -> Handle {
    let (otx, orx) = watch::channel(Observed::default());
    let (ptx, prx) = watch::channel(Published::default());
    tokio::spawn(refresh_loop(socket, interval, orx, ptx));
    Handle {
        observed: otx,
        published: prx,
    }
}

async fn refresh_loop(
    socket: PathBuf,
    interval: Duration,
    mut observed: watch::Receiver<Observed>,
    published: watch::Sender<Published>,
) {
    let mut refreshes = 0u64;
    let mut last_reason: Option<&'static str> = None;
    let mut last_key: Option<u64> = None;
    let mut last_refresh: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        let o = *observed.borrow_and_update();
        let now = tokio::time::Instant::now();
        let since = last_refresh.map(|t| now - t);
        let due = o.active
            && match since {
                None => true,
                Some(s) if s < MIN_GAP => false,
                Some(s) => {
                    last_key != Some(o.key)
                        || s >= interval
                        || ((failing || o.unnamed) && s >= RETRY)
                }
            };
        if !due {
            // Wake at the next moment a refresh could be due, or when the loop reports.
            let wait = match since {
                Some(s) if o.active => {
                    let next = if last_key != Some(o.key) {
                        MIN_GAP
                    } else if failing || o.unnamed {
                        RETRY.min(interval)
                    } else {
                        interval
                    };
                    next.saturating_sub(s).max(Duration::from_millis(50))
                }
                _ => interval,
            };
            tokio::select! {
                r = observed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        last_refresh = Some(now);
        last_key = Some(o.key);
        refreshes += 1;
        let result = fetch(&socket).await;
        let (names, up, reason) = match result {
            Ok(n) => {
                if last_reason != Some("ok") {
                    tracing::info!(
                        socket = %socket.display(),
                        services = n.netns.values().map(HashMap::len).sum::<usize>(),
                        "reading Docker names"
                    );
                }
                (Some(Arc::new(n)), true, "ok")
            }
            Err(e) => {
                let reason = e.reason();
                if last_reason != Some(reason) {
                    tracing::warn!(
                        error = %e,
                        reason,
                        "cannot read Docker names; the IPVS series go on without them"
                    );
                }
                (None, false, reason)
            }
        };
        failing = !up;
        last_reason = Some(reason);
        published.send_replace(Published {
            names,
            status: Some(DockerStatus {
                up,
                reason,
                refreshes,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{destination, service};
    use crate::model::{Family, Service};

    /// `GET /networks/{id}?verbose=true` of the ingress network on a Docker 20.10 node (the
    /// fields used, as Docker writes them).
    const INGRESS: &str = r#"{"Name":"ingress","Id":"wz1yqkdz8mh6dn0kldbf7fj5v","Scope":"swarm","Driver":"overlay","Ingress":true,
      "Containers":{"ingress-sbox":{"Name":"ingress-endpoint","IPv4Address":"10.0.0.2/24"}},
      "Services":{
        "web":{"VIP":"10.0.0.4","Ports":["Target: 80, Publish: 30080"],"LocalLBIndex":257,
          "Tasks":[{"Name":"web.1.k3l1x0zf0c3s","EndpointID":"e1","EndpointIP":"10.0.0.5","Info":{"Host IP":"10.0.2.15"}},
                   {"Name":"web.2.9w7kh1pm2c1q","EndpointID":"e2","EndpointIP":"10.0.0.6","Info":{"Host IP":"10.0.2.16"}}]},
        "dnsrr":{"VIP":"","Ports":[],"LocalLBIndex":0,"Tasks":[]}
      }}"#;

    const OVERLAY: &str = r#"{"Name":"backnet","Id":"njw64m6prx1t2ko8pxa3ah0sf","Scope":"swarm","Driver":"overlay","Ingress":false,
      "Services":{"shop_api":{"VIP":"10.0.1.2","LocalLBIndex":258,
          "Tasks":[{"Name":"shop_api.yx1z2mm4xq0qz3e7a1b2c3d4e.p0q9r8s7t6u5","EndpointIP":"10.0.1.3","Info":{"Host IP":"10.0.2.15"}}]}}}"#;

    const CONTAINERS: &str = r#"[{"Id":"c0ffee","Names":["/web.1.k3l1x0zf0c3s"],"Labels":{
        "com.docker.swarm.service.id":"svcweb","com.docker.swarm.service.name":"web",
        "com.docker.swarm.task.name":"web.1.k3l1x0zf0c3s","com.docker.swarm.node.id":"n1"}},
      {"Id":"beef","Labels":{"com.docker.swarm.service.id":"svcapi","com.docker.swarm.service.name":"shop_api",
        "com.docker.swarm.task.name":"shop_api.yx1z2mm4xq0qz3e7a1b2c3d4e.p0q9r8s7t6u5","com.docker.stack.namespace":"shop"}},
      {"Id":"plain","Labels":{}}]"#;

    fn fwm(mark: u32, dests: &[&str]) -> Service {
        service(
            Family::Inet,
            ServiceAddress::Fwmark { mark },
            dests.iter().map(|d| destination(d, 0)).collect(),
        )
    }

    fn names() -> DockerNames {
        DockerNames::build(
            vec![
                serde_json::from_str(INGRESS).unwrap(),
                serde_json::from_str(OVERLAY).unwrap(),
            ],
            serde_json::from_str(CONTAINERS).unwrap(),
            vec![],
        )
    }

    fn label<'a>(n: &'a Name, k: &str) -> &'a str {
        n.labels
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    #[test]
    fn marks_and_addresses_name_services_and_tasks() {
        let n = names();
        let ipvs = IpvsState {
            info: Default::default(),
            timeouts: Default::default(),
            services: vec![
                fwm(256, &["10.0.0.9"]),
                fwm(257, &["10.0.0.5", "10.0.0.6", "10.0.0.7"]),
            ],
        };
        let mut out = NetnsNames::default();
        n.name("ingress_sbox", &ipvs, &mut out);
        assert_eq!(out.services.len(), 1);
        let (si, web) = &out.services[0];
        assert_eq!((*si, web.name.as_str(), web.source), (1, "web", "docker"));
        assert_eq!(label(web, "service_id"), "svcweb");
        assert_eq!(out.destinations.len(), 2);
        let (_, di, t1) = &out.destinations[0];
        assert_eq!((*di, t1.name.as_str()), (0, "web.1.k3l1x0zf0c3s"));
        assert_eq!(label(t1, "slot"), "1");
        assert_eq!(label(t1, "task_id"), "k3l1x0zf0c3s");
        assert_eq!(label(t1, "container_id"), "c0ffee");
        assert_eq!(label(t1, "node"), "10.0.2.15");
        let (_, _, t2) = &out.destinations[1];
        // Another node's task: no local container.
        assert_eq!(
            (label(t2, "container_id"), label(t2, "node")),
            ("", "10.0.2.16")
        );
        // The same mark in another namespace is another service.
        let mut lb = NetnsNames::default();
        n.name("lb_njw64m6pr", &ipvs, &mut lb);
        assert!(lb.services.is_empty());
        let api = IpvsState {
            services: vec![fwm(258, &["10.0.1.3"])],
            ..ipvs
        };
        n.name("lb_njw64m6pr", &api, &mut lb);
        let (_, svc) = &lb.services[0];
        assert_eq!(
            (svc.name.as_str(), svc.namespace.as_str()),
            ("shop_api", "shop")
        );
        let (_, _, t) = &lb.destinations[0];
        // A global service's task: node id in the middle, no slot.
        assert_eq!(
            (label(t, "slot"), label(t, "task_id")),
            ("", "p0q9r8s7t6u5")
        );
        assert_eq!(t.namespace, "shop");
    }

    #[test]
    fn netns_names_and_task_names() {
        assert_eq!(lb_netns("njw64m6prx1t2ko8pxa3ah0sf"), "lb_njw64m6pr");
        assert!(is_docker_netns("ingress_sbox") && is_docker_netns("lb_njw64m6pr"));
        assert!(!is_docker_netns("host") && !is_docker_netns("1-njw64m6pr"));
        assert_eq!(
            task_parts("web", "web.3.abc"),
            ("3".to_string(), "abc".to_string())
        );
        assert_eq!(
            task_parts("web", "other.3.abc"),
            (String::new(), String::new())
        );
        assert_eq!(
            task_parts("a.b", "a.b.1.x"),
            ("1".to_string(), "x".to_string())
        );
    }

    #[test]
    fn observed_changes_with_marks_and_replicas() {
        use crate::model::{NamespaceSnapshot, NetnsContext, NetnsId};
        let snap = |services: Vec<Service>| Snapshot {
            namespaces: vec![NamespaceSnapshot {
                netns: NetnsId {
                    name: "ingress_sbox".into(),
                    dev: 1,
                    inode: 2,
                },
                ipvs: Ok(IpvsState {
                    info: Default::default(),
                    timeouts: Default::default(),
                    services,
                }),
                context: NetnsContext::default(),
                duration: Duration::ZERO,
                timestamp: std::time::SystemTime::UNIX_EPOCH,
            }],
        };
        let a = snap(vec![fwm(257, &["10.0.0.5", "10.0.0.6"])]);
        let b = snap(vec![fwm(257, &["10.0.0.5", "10.0.0.6", "10.0.0.7"])]);
        let c = snap(vec![fwm(300, &["10.0.0.5", "10.0.0.6"])]);
        let n = names();
        let resolved = |s: &Snapshot| super::super::resolve(s, &[&n]);
        let oa = observe(&a, &resolved(&a), Some(&n));
        assert!(oa.active && !oa.unnamed, "{oa:?}");
        let ob = observe(&b, &resolved(&b), Some(&n));
        assert!(ob.unnamed && ob.key != oa.key);
        let oc = observe(&c, &resolved(&c), Some(&n));
        assert!(oc.unnamed && oc.key != oa.key);
        let host = Snapshot {
            namespaces: vec![NamespaceSnapshot {
                netns: NetnsId {
                    name: "host".into(),
                    dev: 1,
                    inode: 3,
                },
                ..a.namespaces[0].clone()
            }],
        };
        assert!(!observe(&host, &BTreeMap::new(), None).active);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_reason() {
        let e = fetch(Path::new("/nonexistent/docker.sock"))
            .await
            .err()
            .unwrap();
        assert_eq!(e.reason(), "socket_missing");
        assert!(e.to_string().contains("/nonexistent/docker.sock"), "{e}");
    }
}
