//! The daemon's life: start, serve, reload on SIGHUP, drain on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tollbridge_config::{Config, StripeMode};
use tollbridge_media::ports::PortPool;
use tollbridge_media::prompt::PromptLibrary;
use tollbridge_media::relay::{FastPath, Relay};
use tollbridge_sip::edge::SipEdge;
use tracing::{error, info, warn};

use crate::calls::meter::Meters;
use crate::calls::recovery;
use crate::calls::task::CallControl;
use crate::clock::now_ms;
use crate::ledger::Ledger;
use crate::logging::LogHandle;
use crate::reload;
use crate::settle::Settler;
use crate::settle::timed::TimedGateway;
use crate::shutdown::Background;
use crate::state::Shared;
use crate::systemd;
use tollbridge_billing::stripe::StripeGateway;
use tollbridge_billing::stripe::retry::RetryPolicy;

/// Where the config came from, so SIGHUP can read it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The built-in defaults (no file given).
    Defaults,
    /// A file.
    File(PathBuf),
}

fn config_registrar_enabled(shared: &Shared) -> bool {
    shared.config.load().registrar.enabled()
}

/// Starts the registrar: its nonce secret from the ledger (made by the
/// first node to need one), the REGISTERs from the edge, and the
/// keep-alives toward the devices registered through this node.
async fn start_registrar(
    shared: &Arc<Shared>,
    sip: &Arc<SipEdge>,
    background: &mut Background,
) -> anyhow::Result<()> {
    let fresh = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let secret = shared
        .ledger
        .registrar_secret(fresh)
        .await
        .context("cannot read the registrar's nonce secret from the ledger")?;
    let registrar = Arc::new(crate::registrar::Registrar::new(
        shared.clone(),
        secret.as_bytes(),
    ));
    if let Some(registers) = sip.take_registers() {
        tokio::spawn(registrar.clone().serve(registers));
    }
    info!(realm = %crate::registrar::realm_of(&shared.config.load()), "registrar on (registrar.allow)");
    background.spawn(
        "registrar keep-alives",
        crate::registrar::keep_alive_loop(registrar, sip.clone(), background.signal()),
    );
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT and a finished drain.
pub async fn run(source: ConfigSource, config: Config, log: LogHandle) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), config = ?source, "starting tollbridge");
    // Before anything announces readiness: a SIGHUP that arrived between
    // READY=1 and the handler would otherwise kill the process (its default).
    let mut signals = Signals::install()?;
    // Bad certificate files stop the start before anything is opened.
    // The process default, for what rsipstack builds itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sip_tls = crate::edge::SipTls::open(&config).context("cannot use [sip.tls]")?;
    let https = match &config.http.tls {
        Some(tls) => {
            Some(crate::tls::Certificates::open("http.tls", tls).context("cannot serve HTTPS")?)
        }
        None => None,
    };
    // One daemon per SQLite file; `tollbridge restore` checks for it too.
    let _database_lock = match &config.database.url {
        Some(_) => None,
        None => Some(
            crate::ledger::backup::DatabaseLock::take(&config.database.path)
                .map_err(|why| anyhow::anyhow!("cannot use database.path: {why}"))?,
        ),
    };
    let database = config.database.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(&database))
        .await
        .context("database open task failed")??
        .for_node(&config.node.name);
    info!(database = %ledger.describe(), node = %config.node.name, "database open");
    let started_ms = now_ms();
    // Registered before anything else: a node that restarts quickly is
    // seen alive again before another takes its calls over.
    ledger
        .heartbeat(started_ms, false)
        .await
        .context("cannot register this node in the ledger")?;

    // Before the calls are closed and priced: a recording a crash cut
    // short is made playable and measured.
    let finalized = crate::calls::recording::finalize_left_open(&ledger)
        .await
        .context("cannot finalize the recordings a previous run left open")?;
    if finalized > 0 {
        warn!(
            recordings = finalized,
            "finalized recordings left open by a previous run"
        );
    }
    let recovered = ledger
        .recover_open_calls(now_ms())
        .await
        .context("cannot close the calls a previous run left open")?;
    if recovered > 0 {
        warn!(
            calls = recovered,
            "closed calls left open by a previous run (reason recovered)"
        );
    }
    let quarantine = config.media.port_quarantine;
    let since_ms = started_ms.saturating_sub(i64::try_from(quarantine.as_millis()).unwrap_or(0));
    let unfinished = ledger
        .unfinished_calls()
        .await
        .context("cannot read the calls a previous run left to hang up")?;
    let recently_released = ledger
        .recently_released_ports(since_ms, started_ms)
        .await
        .context("cannot read the ports of recently ended calls")?;
    let relay = Arc::new(start_relay(&config)?);
    // Before the SIP edge takes a call: no new call may get a port whose
    // old parties may still be sending.
    recovery::hold_back_ports(
        &relay,
        &unfinished,
        &recently_released,
        quarantine,
        started_ms,
    );
    let prompts = Arc::new(
        PromptLibrary::load(config.prompts.dir.as_deref(), &config.prompts.language)
            .context("cannot load the prompts (prompts.dir, prompts.language)")?,
    );
    for (language, prompt) in prompts.missing() {
        warn!(language = %language, prompt = %prompt, default = prompts.default_language(), "prompt missing; the default language's plays instead");
    }

    let (sip, calls) = SipEdge::start(crate::edge::edge_config(&config, &sip_tls))
        .await
        .context("cannot start the SIP edge (sip.listen)")?;
    for listener in sip.listeners() {
        info!(transport = ?listener.transport, address = %listener.addr, "sip listening");
    }
    let sip = Arc::new(sip);

    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_address = http_listener
        .local_addr()
        .context("http listener has no address")?;

    log_modes(&config);

    let shared = Shared::new(
        config,
        ledger.clone(),
        Some(sip.clone()),
        Some(relay.clone()),
    );
    let _ = shared
        .prompt_languages
        .set(prompts.languages().map(str::to_owned).collect());
    let recorder = tollbridge_media::recording::Recorder::start()
        .context("cannot start the recording writer thread")?;
    if let Some(certificates) = &sip_tls.certificates {
        let _ = shared.sip_certificates.set(certificates.clone());
    }
    let _ = shared.recorder.set(Arc::new(recorder));
    let mut background = Background::default();
    let hangups = Arc::new(recovery::Hangups {
        ledger: ledger.clone(),
        edge: sip.clone(),
        relay: relay.clone(),
        quarantine,
    });
    if !unfinished.is_empty() {
        warn!(
            calls = unfinished.len(),
            "hanging up the parties of calls a previous run left open"
        );
        background.spawn(
            "recovery hang-ups",
            recovery::hang_up(hangups.clone(), unfinished, "after a restart".to_owned()),
        );
    }
    let meters = Arc::new(Meters::default());
    let settler = start_settler(&shared, &mut background)?;
    background.spawn(
        "cluster",
        crate::cluster::watch(
            shared.clone(),
            hangups,
            settler.clone(),
            started_ms,
            background.signal(),
        ),
    );
    background.spawn("journal", {
        let (shared, settler) = (shared.clone(), settler.clone());
        let signal = background.signal();
        async move {
            let journal = shared.journal.clone();
            journal
                .flush(
                    |_call, priced| {
                        crate::calls::task::rated(&shared, priced);
                        if let Some(settler) = &settler {
                            settler.wake();
                        }
                    },
                    signal,
                )
                .await;
        }
    });
    let control = Arc::new(CallControl {
        shared: shared.clone(),
        edge: sip.clone(),
        relay: relay.clone(),
        prompts,
        meters: meters.clone(),
        settler,
    });
    tokio::spawn(crate::calls::task::answer_calls(control, calls));
    if let Err(e) = ledger
        .set_webhook_endpoints(
            crate::notify::endpoints(&shared.config.load().webhooks),
            now_ms(),
        )
        .await
    {
        warn!(error = %e, "cannot record the [[webhook]] endpoints in the ledger");
    }
    background.spawn(
        "webhooks",
        crate::notify::deliver_loop(shared.clone(), background.signal()),
    );
    if config_registrar_enabled(&shared) {
        start_registrar(&shared, &sip, &mut background).await?;
    }
    background.spawn(
        "recording-retention",
        crate::calls::recording::retention_loop(shared.clone(), background.signal()),
    );
    background.spawn(
        "booking-windows",
        crate::bookings::windows::close_loop(shared.clone(), background.signal()),
    );
    background.spawn(
        "checkpoints",
        crate::calls::meter::checkpoint_loop(shared.clone(), meters, background.signal()),
    );
    let (stop_http, http_stopped) = watch::channel(false);
    if let Some(certificates) = &https {
        let _ = shared.https.set(certificates.clone());
    }
    let scheme = if https.is_some() { "https" } else { "http" };
    let server = tokio::spawn(serve_http(
        http_listener,
        https,
        shared.clone(),
        http_stopped,
    ));
    info!(address = %http_address, scheme, "http listening");
    shared.mark_listeners_bound();

    systemd::ready("ready; 0 active call(s)");
    background.spawn(
        "systemd status",
        systemd::report_status(shared.clone(), background.signal()),
    );
    if let Some(interval) = systemd::watchdog_interval() {
        info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog enabled"
        );
        background.spawn(
            "systemd watchdog",
            systemd::run_watchdog(shared.clone(), interval, background.signal()),
        );
    }

    wait_for_stop_signal(&mut signals, &shared, &source, &log).await;
    drain(&mut signals, &shared).await;

    systemd::stopping();
    info!("stopping");
    let _ = stop_http.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "http server ended with an error"),
        Err(e) => warn!(error = %e, "http server task failed"),
    }
    // Every loop that writes to the store is done before it closes.
    background.stop(BACKGROUND_STOP_LIMIT).await;
    sip.stop();
    drop(shared);
    ledger.close().await;
    info!("stopped");
    Ok(())
}

/// Binds nothing yet: the relay's thread, and the port range it allocates
/// from per call.
fn start_relay(config: &Config) -> anyhow::Result<Relay> {
    let media = &config.media;
    let pool = PortPool::new(
        media.address,
        media.ports.first,
        media.ports.last,
        media.port_quarantine,
    );
    let public_ip = media.public_address.unwrap_or(media.address);
    let threads = media.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut relay = Relay::start(
        pool,
        crate::calls::task::latch_policy(media.latch),
        public_ip,
        threads,
    )
    .context("cannot start the media relay threads")?;
    if !media.fast_path.is_empty() {
        let fast_path = FastPath::attach(&media.fast_path)
            .map_err(|e| anyhow::anyhow!("media.fast_path: {e}"))?;
        relay
            .use_fast_path(fast_path)
            .context("cannot hand the relay threads the fast path")?;
    }
    info!(address = %media.address, public = %public_ip, ports = %media.ports, pairs = relay.capacity(), threads, fast_path = ?media.fast_path, "media relay ready");
    Ok(relay)
}

/// The Stripe gateway and the settlement worker, unless ledger-only.
fn start_settler(
    shared: &Arc<Shared>,
    background: &mut Background,
) -> anyhow::Result<Option<Arc<Settler>>> {
    let config = shared.config.load();
    let Some(key) = &config.stripe.secret_key else {
        return Ok(None);
    };
    let gateway = StripeGateway::new(
        key.expose(),
        &config.stripe.api_base,
        config.stripe.request_timeout,
        RetryPolicy::default(),
    )
    .context("cannot set up the Stripe client (stripe.*)")?;
    let gateway = TimedGateway::new(gateway, shared.metrics.stripe_latency());
    let settler = Settler::new(shared.ledger.clone(), Arc::new(gateway));
    background.spawn("settlement", settler.clone().run(background.signal()));
    Ok(Some(settler))
}

/// Says at start what the operator must know: how money is handled and
/// whether the API is usable.
fn log_modes(config: &Config) {
    match config.stripe.mode() {
        StripeMode::LedgerOnly => warn!(
            stripe = "ledger-only",
            "no stripe.secret_key: ledger-only mode, calls are rated and recorded but nothing is charged"
        ),
        mode => info!(stripe = mode.as_str(), api_base = %config.stripe.api_base, "stripe enabled"),
    }
    if config.http.api_token.is_none() {
        warn!("no http.api_token: the /v1 API refuses every request");
    }
    for trunk in &config.trunks {
        info!(
            trunk = %trunk.name,
            profile = %trunk.profile,
            sources = trunk.allowed_sources().len(),
            "trunk allowed to send calls"
        );
    }
}

/// Serves the API on `listener`, over TLS with `https`'s certificate
/// when given, until `stop`.
async fn serve_http(
    listener: TcpListener,
    https: Option<Arc<crate::tls::Certificates>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let router = crate::http::router(shared);
    match https {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(certificates) => {
            let listener = crate::http::tls::TlsListener::new(listener, certificates)
                .map_err(std::io::Error::other)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

/// The signals the daemon handles, installed once at start.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }
}

/// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
async fn wait_for_stop_signal(
    signals: &mut Signals,
    shared: &Arc<Shared>,
    source: &ConfigSource,
    log: &LogHandle,
) {
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => { info!(signal = "SIGTERM", "drain requested"); return; }
            _ = signals.interrupt.recv() => { info!(signal = "SIGINT", "drain requested"); return; }
            _ = signals.hangup.recv() => reload::reload(shared, source, log).await,
        }
    }
}

/// The longest the background loops get to finish their work in hand
/// (a Stripe request with its retries) once the daemon stops.
const BACKGROUND_STOP_LIMIT: Duration = Duration::from_secs(60);

/// After the drain time, how long the calls still up get to end: the
/// time-up prompt, then BYE transactions (Timer F, 32 s) on both legs.
const DRAIN_HANG_UP_LIMIT: Duration = Duration::from_secs(45);

/// Refuses new calls and waits for calls in progress to end, up to
/// `calls.drain_timeout`; then ends those still up (the time-up prompt to
/// both parties, BYE, recorded `drained` and settled) and waits for that.
/// A second SIGTERM/SIGINT cuts either wait short.
async fn drain(signals: &mut Signals, shared: &Arc<Shared>) {
    shared.start_draining();
    let timeout = shared.config.load().calls.drain_timeout;
    let active = shared.active_calls();
    info!(
        active_calls = active,
        timeout_s = timeout.as_secs(),
        "draining: new calls are refused"
    );
    systemd::status(&format!("draining; {active} active call(s)"));
    match wait_for_calls(signals, shared, timeout).await {
        Wait::NoCalls => {
            info!("drained: no calls in progress");
            return;
        }
        Wait::Interrupted => return,
        Wait::TimedOut => {}
    }
    warn!(
        active_calls = shared.active_calls(),
        "drain timeout reached: ending the calls still in progress (reason drained)"
    );
    shared.end_drain();
    match wait_for_calls(signals, shared, DRAIN_HANG_UP_LIMIT).await {
        Wait::NoCalls => info!("drained: the remaining calls were ended"),
        Wait::Interrupted => {}
        Wait::TimedOut => error!(
            active_calls = shared.active_calls(),
            "calls still up after ending them; stopping anyway"
        ),
    }
}

/// How a wait for the calls to end came out.
enum Wait {
    NoCalls,
    TimedOut,
    /// A second SIGTERM/SIGINT: stop without waiting any longer.
    Interrupted,
}

/// Waits until no call is in progress, `limit` passes, or a second stop
/// signal arrives.
async fn wait_for_calls(signals: &mut Signals, shared: &Arc<Shared>, limit: Duration) -> Wait {
    let mut calls = shared.watch_active_calls();
    tokio::select! {
        result = tokio::time::timeout(limit, calls.wait_for(|n| *n == 0)) => match result {
            Ok(_) => Wait::NoCalls,
            Err(_) => Wait::TimedOut,
        },
        _ = signals.terminate.recv() => {
            warn!(active_calls = shared.active_calls(), "second SIGTERM: stopping without waiting");
            Wait::Interrupted
        }
        _ = signals.interrupt.recv() => {
            warn!(active_calls = shared.active_calls(), "second SIGINT: stopping without waiting");
            Wait::Interrupted
        }
    }
}
