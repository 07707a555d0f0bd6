//! Procedures and message handlers, by name, with typed adapters (serde in, serde out).
//!
//! One registry serves both ends: the server registers the procedures clients call, the
//! client registers the procedures the server calls. `C` is the context a handler receives:
//! the server's connection handle, or the client.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, RpcError};
use crate::frame::{self, is_reserved};
use crate::protocol::{PayloadError, Protocol};

/// What a running procedure resolves to: its `~wse:response` frame, already encoded (with
/// the concrete result type, so the built-in codecs skip type erasure), or its error.
pub(crate) type ProcedureFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RpcError>> + Send>>;

/// A procedure once started.
pub(crate) enum Started {
    /// It finished at once: its response frame, or its error (a panic included).
    Finished(Result<Vec<u8>, RpcError>),
    /// It waits for something: the rest of it, to run in a task of its own (it may panic).
    Waiting(ProcedureFuture),
}

/// A registered procedure with its argument and result types erased.
pub(crate) trait Procedure<C>: Send + Sync {
    /// Decodes the argument (synchronously, straight from the frame), starts the procedure,
    /// whose answer will carry `stamp`, and runs it until it first waits.
    fn start(
        &self,
        ctx: C,
        protocol: &Arc<dyn Protocol>,
        payload: &[u8],
        stamp: &str,
    ) -> Result<Started, PayloadError>;
}

/// A registered message handler with its payload type erased.
pub(crate) trait Handler<C>: Send + Sync {
    fn handle(&self, ctx: C, protocol: &dyn Protocol, payload: &[u8]) -> Result<(), PayloadError>;
}

/// The fallback message handler ([`Registry::on_any`]), or the observer of calls to
/// procedures that are not registered ([`Registry::on_unregistered_call`]), with its payload
/// type erased.
pub(crate) trait Fallback<C>: Send + Sync {
    fn handle(
        &self,
        ctx: C,
        kind: &str,
        protocol: &dyn Protocol,
        payload: &[u8],
    ) -> Result<(), PayloadError>;
}

struct TypedProcedure<F, A>(F, PhantomData<fn(A)>);

impl<C, F, A, R, Fut> Procedure<C> for TypedProcedure<F, A>
where
    F: Fn(C, A) -> Fut + Send + Sync,
    A: DeserializeOwned,
    Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    R: Serialize + Send + 'static,
{
    fn start(
        &self,
        ctx: C,
        protocol: &Arc<dyn Protocol>,
        payload: &[u8],
        stamp: &str,
    ) -> Result<Started, PayloadError> {
        let args = protocol.decode::<A>(payload)?;
        let mut running = Box::pin((self.0)(ctx, args));
        // Most procedures finish without waiting for anything: they are answered right here,
        // with no task, no wake-up and nothing else to allocate. The first poll registers no
        // waker; a procedure that waits is polled again in its task, which registers its own.
        let first_poll = std::panic::catch_unwind(AssertUnwindSafe(|| {
            running
                .as_mut()
                .poll(&mut TaskContext::from_waker(Waker::noop()))
        }));
        let result = match first_poll {
            Ok(Poll::Ready(result)) => result,
            Err(_) => Err(RpcError::panicked()),
            Ok(Poll::Pending) => {
                let (protocol, stamp) = (Arc::clone(protocol), stamp.to_owned());
                return Ok(Started::Waiting(Box::pin(async move {
                    let result = running.await?;
                    Ok(protocol.encode(frame::RESPONSE, &result, Some(&stamp))?)
                })));
            }
        };
        Ok(Started::Finished(result.and_then(|result| {
            Ok(protocol.encode(frame::RESPONSE, &result, Some(stamp))?)
        })))
    }
}

struct TypedHandler<F, T>(F, PhantomData<fn(T)>);

impl<C, F, T> Handler<C> for TypedHandler<F, T>
where
    F: Fn(C, T) + Send + Sync,
    T: DeserializeOwned,
{
    fn handle(&self, ctx: C, protocol: &dyn Protocol, payload: &[u8]) -> Result<(), PayloadError> {
        (self.0)(ctx, protocol.decode::<T>(payload)?);
        Ok(())
    }
}

struct TypedFallback<F, T>(F, PhantomData<fn(T)>);

impl<C, F, T> Fallback<C> for TypedFallback<F, T>
where
    F: Fn(C, &str, T) + Send + Sync,
    T: DeserializeOwned,
{
    fn handle(
        &self,
        ctx: C,
        kind: &str,
        protocol: &dyn Protocol,
        payload: &[u8],
    ) -> Result<(), PayloadError> {
        (self.0)(ctx, kind, protocol.decode::<T>(payload)?);
        Ok(())
    }
}

/// The argument of a procedure or message that takes none: accepts a null payload, a missing
/// one (which the codecs read as null) and an empty object `{}` alike, and refuses anything
/// else with `wse.server.rp.invalid-payload`. (`()` refuses `{}`, and an empty struct refuses
/// null.)
///
/// ```
/// use wse_core::{Json, NoArgs, Protocol};
///
/// let json: &dyn Protocol = &Json;
/// for payload in [&b"null"[..], b"{}", b" { } "] {
///     assert_eq!(json.decode::<NoArgs>(payload).unwrap(), NoArgs);
/// }
/// assert!(json.decode::<NoArgs>(br#"{"a": 1}"#).is_err());
/// assert!(json.decode::<NoArgs>(b"7").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NoArgs;

impl<'de> serde::Deserialize<'de> for NoArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoArgsVisitor)
    }
}

impl Serialize for NoArgs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

struct NoArgsVisitor;

impl<'de> serde::de::Visitor<'de> for NoArgsVisitor {
    type Value = NoArgs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no arguments (null or {})")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<NoArgs, E> {
        Ok(NoArgs)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<NoArgs, E> {
        Ok(NoArgs)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoArgs, A::Error> {
        match map.next_key::<serde::de::IgnoredAny>()? {
            None => Ok(NoArgs),
            Some(_) => Err(serde::de::Error::custom(
                "expected no arguments (null or {}), got an object with keys",
            )),
        }
    }
}

/// Registering or unregistering failed; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A procedure with this name exists (`wse.server.rp.already-registered`).
    #[error("{code}: {0:?}", code = ErrorCode::RpAlreadyRegistered)]
    AlreadyRegistered(String),
    /// No procedure with this name exists (`wse.server.rp.not-registered`).
    #[error("{code}: {0:?}", code = ErrorCode::RpNotRegistered)]
    NotRegistered(String),
    /// The name is empty or starts with `~wse:`, which the protocol reserves.
    #[error("the name {0:?} is empty or reserved for the protocol")]
    InvalidName(String),
}

/// Procedures and message handlers by name.
///
/// Dispatch reads a snapshot without taking any lock (it runs for every frame of every
/// connection); a change copies the snapshot, edits the copy and swaps it in, one change at a
/// time. No handler ever runs while a lock is held.
pub struct Registry<C> {
    /// What dispatch reads, swapped whole on every change.
    current: ArcSwap<Entries<C>>,
    /// Serialises changes, so that two made at once cannot lose one.
    changing: Mutex<()>,
}

/// One snapshot of the registry.
pub(crate) struct Entries<C> {
    // Fx, not SipHash: looked up for every frame, and filled only by the application (a
    // peer's names are only looked up, so it cannot build the collisions SipHash guards
    // against).
    procedures: FxHashMap<String, Arc<dyn Procedure<C>>>,
    handlers: FxHashMap<String, Arc<dyn Handler<C>>>,
    /// The handler of messages whose type has no handler of its own.
    fallback: Option<Arc<dyn Fallback<C>>>,
    /// The observer of calls to procedures that are not registered (they are still answered
    /// `wse.server.rp.not-registered`): the fallback's shape, name and payload.
    unregistered: Option<Arc<dyn Fallback<C>>>,
}

impl<C> Clone for Entries<C> {
    fn clone(&self) -> Self {
        Self {
            procedures: self.procedures.clone(),
            handlers: self.handlers.clone(),
            fallback: self.fallback.clone(),
            unregistered: self.unregistered.clone(),
        }
    }
}

impl<C> Entries<C> {
    pub(crate) fn procedure(&self, name: &str) -> Option<&dyn Procedure<C>> {
        self.procedures.get(name).map(|procedure| &**procedure)
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<&dyn Handler<C>> {
        self.handlers.get(kind).map(|handler| &**handler)
    }

    pub(crate) fn fallback(&self) -> Option<&dyn Fallback<C>> {
        self.fallback.as_deref()
    }

    pub(crate) fn unregistered(&self) -> Option<&dyn Fallback<C>> {
        self.unregistered.as_deref()
    }
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Entries {
                procedures: FxHashMap::default(),
                handlers: FxHashMap::default(),
                fallback: None,
                unregistered: None,
            }),
            changing: Mutex::new(()),
        }
    }
}

impl<C> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.current.load();
        let mut procedures: Vec<&String> = entries.procedures.keys().collect();
        let mut handlers: Vec<&String> = entries.handlers.keys().collect();
        procedures.sort();
        handlers.sort();
        f.debug_struct("Registry")
            .field("procedures", &procedures)
            .field("handlers", &handlers)
            .field("fallback", &entries.fallback.is_some())
            .field("unregistered", &entries.unregistered.is_some())
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), RegisterError> {
    if name.is_empty() || is_reserved(name) {
        return Err(RegisterError::InvalidName(name.to_owned()));
    }
    Ok(())
}

impl<C: Send + 'static> Registry<C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the async procedure `name`. Its argument is decoded from the call's payload
    /// ([`NoArgs`] for a procedure that takes none); its result is sent back as the response.
    ///
    /// # Errors
    /// [`RegisterError::AlreadyRegistered`] if `name` is taken, [`RegisterError::InvalidName`]
    /// if it is empty or reserved.
    pub fn register<A, R, F, Fut>(
        &self,
        name: impl Into<String>,
        procedure: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(C, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let name = name.into();
        check_name(&name)?;
        self.change(|entries| {
            if entries.procedures.contains_key(&name) {
                return Err(RegisterError::AlreadyRegistered(name));
            }
            let procedure = Arc::new(TypedProcedure(procedure, PhantomData));
            entries.procedures.insert(name, procedure);
            Ok(())
        })
    }

    /// Removes the procedure `name`; calls already running finish.
    ///
    /// # Errors
    /// [`RegisterError::NotRegistered`] if there is no such procedure.
    pub fn unregister(&self, name: &str) -> Result<(), RegisterError> {
        self.change(|entries| match entries.procedures.remove(name) {
            Some(_) => Ok(()),
            None => Err(RegisterError::NotRegistered(name.to_owned())),
        })
    }

    /// Whether a procedure called `name` is registered.
    pub fn has_procedure(&self, name: &str) -> bool {
        self.current.load().procedures.contains_key(name)
    }

    /// Sets the handler of one-way messages of type `kind`, replacing any previous one.
    ///
    /// Handlers are synchronous and run in the connection's read loop, in arrival order; spawn
    /// a task from the handler for slow work.
    ///
    /// # Errors
    /// [`RegisterError::InvalidName`] if `kind` is empty or reserved.
    pub fn on<T, F>(&self, kind: impl Into<String>, handler: F) -> Result<(), RegisterError>
    where
        F: Fn(C, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        let kind = kind.into();
        check_name(&kind)?;
        self.change(|entries| {
            let handler = Arc::new(TypedHandler(handler, PhantomData));
            entries.handlers.insert(kind, handler);
            Ok(())
        })
    }

    /// Removes the handler of `kind`; returns whether there was one.
    pub fn off(&self, kind: &str) -> bool {
        self.change(|entries| Ok::<_, ()>(entries.handlers.remove(kind).is_some()))
            .unwrap_or(false)
    }

    /// Sets the fallback handler of one-way messages: it gets every message whose type has
    /// no handler of its own ([`Registry::on`]), with that type, instead of the message being
    /// reported as ignored. Replaces any previous fallback.
    ///
    /// It runs as [`Registry::on`]'s handlers do: synchronously, in the connection's read
    /// loop, in arrival order. A payload that does not fit `T` is reported as
    /// [`Report::InvalidPayload`](crate::Report::InvalidPayload) and skipped: take
    /// `serde_json::Value` to see every payload.
    pub fn on_any<T, F>(&self, handler: F)
    where
        F: Fn(C, &str, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        let set = self.change(|entries| {
            entries.fallback = Some(Arc::new(TypedFallback(handler, PhantomData)));
            Ok::<_, ()>(())
        });
        debug_assert!(set.is_ok(), "setting the fallback cannot fail");
    }

    /// Removes the fallback handler; returns whether there was one. Messages without a
    /// handler of their own are reported as ignored again.
    pub fn off_any(&self) -> bool {
        self.change(|entries| Ok::<_, ()>(entries.fallback.take().is_some()))
            .unwrap_or(false)
    }

    /// Sets the observer of the other side's calls to procedures that are not registered,
    /// replacing any previous one: it gets each such call's procedure name and arguments.
    /// The call is still answered `wse.server.rp.not-registered`, as without an observer (to
    /// answer it, register the procedure); the observer only sees it, e.g. to log it.
    ///
    /// It runs as [`Registry::on`]'s handlers do: synchronously, in the connection's read
    /// loop, in arrival order, after the answer is queued. Arguments that do not fit `T` are
    /// reported as [`Report::InvalidPayload`](crate::Report::InvalidPayload) (the call is
    /// answered not-registered all the same): take `serde_json::Value` to see them all.
    pub fn on_unregistered_call<T, F>(&self, observer: F)
    where
        F: Fn(C, &str, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        let set = self.change(|entries| {
            entries.unregistered = Some(Arc::new(TypedFallback(observer, PhantomData)));
            Ok::<_, ()>(())
        });
        debug_assert!(set.is_ok(), "setting the observer cannot fail");
    }

    /// Removes the observer of calls to procedures that are not registered; returns whether
    /// there was one.
    pub fn off_unregistered_call(&self) -> bool {
        self.change(|entries| Ok::<_, ()>(entries.unregistered.take().is_some()))
            .unwrap_or(false)
    }

    /// The current snapshot, read without a lock; it stays valid while held, whatever
    /// changes meanwhile.
    pub(crate) fn entries(&self) -> Guard<Arc<Entries<C>>> {
        self.current.load()
    }

    /// Applies `edit` to a copy of the snapshot and swaps the copy in when `edit` succeeds.
    fn change<T, E>(&self, edit: impl FnOnce(&mut Entries<C>) -> Result<T, E>) -> Result<T, E> {
        // Only the swap runs under this lock: a poisoned lock guards nothing broken.
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entries = Entries::clone(&self.current.load());
        let done = edit(&mut entries)?;
        let old = self.current.swap(Arc::new(entries));
        // The handlers it may be the last to hold are dropped once the lock is released:
        // their destructors are the application's code.
        drop(_changing);
        drop(old);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_unique() {
        let registry = Registry::<()>::new();
        let add = |_: (), (a, b): (i32, i32)| async move { Ok::<_, RpcError>(a + b) };
        assert_eq!(registry.register("add", add), Ok(()));
        assert_eq!(
            registry.register("add", add),
            Err(RegisterError::AlreadyRegistered("add".into()))
        );
        assert!(matches!(
            registry.register("~wse:hi", add),
            Err(RegisterError::InvalidName(_))
        ));
        assert!(matches!(
            registry.register("", add),
            Err(RegisterError::InvalidName(_))
        ));
        assert_eq!(registry.unregister("add"), Ok(()));
        assert_eq!(
            registry.unregister("add"),
            Err(RegisterError::NotRegistered("add".into()))
        );
    }
}
