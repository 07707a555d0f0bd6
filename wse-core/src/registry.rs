//! Procedures and message handlers, by name, with typed adapters (serde in, serde out).
//!
//! One registry serves both ends: the server registers the procedures clients call, the
//! client registers the procedures the server calls. `C` is the context a handler receives:
//! the server's connection handle, or the client.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, RpcError};
use crate::frame::{self, is_reserved};
use crate::protocol::{PayloadError, Protocol};

/// What a running procedure resolves to: its `~wse:response` frame, already encoded (with
/// the concrete result type, so the built-in codecs skip type erasure), or its error.
pub(crate) type ProcedureFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RpcError>> + Send>>;

/// A registered procedure with its argument and result types erased.
pub(crate) trait Procedure<C>: Send + Sync {
    /// Decodes the argument (synchronously, straight from the frame) and starts the handler.
    /// Decodes the argument (synchronously, straight from the frame) and starts the
    /// procedure, whose answer will carry `stamp`.
    fn start(
        &self,
        ctx: C,
        protocol: &Arc<dyn Protocol>,
        payload: &[u8],
        stamp: &str,
    ) -> Result<ProcedureFuture, PayloadError>;
}

/// A registered message handler with its payload type erased.
pub(crate) trait Handler<C>: Send + Sync {
    fn handle(&self, ctx: C, protocol: &dyn Protocol, payload: &[u8]) -> Result<(), PayloadError>;
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
    ) -> Result<ProcedureFuture, PayloadError> {
        let args = protocol.decode::<A>(payload)?;
        let running = (self.0)(ctx, args);
        let (protocol, stamp) = (Arc::clone(protocol), stamp.to_owned());
        Ok(Box::pin(async move {
            let result = running.await?;
            Ok(protocol.encode(frame::RESPONSE, &result, Some(&stamp))?)
        }))
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
/// Registering takes a short write lock; dispatch clones an `Arc` out under a read lock, so
/// no handler ever runs while a lock is held.
pub struct Registry<C> {
    procedures: RwLock<HashMap<String, Arc<dyn Procedure<C>>>>,
    handlers: RwLock<HashMap<String, Arc<dyn Handler<C>>>>,
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Self {
            procedures: RwLock::default(),
            handlers: RwLock::default(),
        }
    }
}

impl<C> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut procedures: Vec<String> = read(&self.procedures).keys().cloned().collect();
        let mut handlers: Vec<String> = read(&self.handlers).keys().cloned().collect();
        procedures.sort();
        handlers.sort();
        f.debug_struct("Registry")
            .field("procedures", &procedures)
            .field("handlers", &handlers)
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // No user code runs under these locks, so a poisoned lock still holds consistent data.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
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
    /// (`()` or `Option<_>` accept a null payload); its result is sent back as the response.
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
        let mut procedures = write(&self.procedures);
        if procedures.contains_key(&name) {
            return Err(RegisterError::AlreadyRegistered(name));
        }
        procedures.insert(name, Arc::new(TypedProcedure(procedure, PhantomData)));
        Ok(())
    }

    /// Removes the procedure `name`; calls already running finish.
    ///
    /// # Errors
    /// [`RegisterError::NotRegistered`] if there is no such procedure.
    pub fn unregister(&self, name: &str) -> Result<(), RegisterError> {
        match write(&self.procedures).remove(name) {
            Some(_) => Ok(()),
            None => Err(RegisterError::NotRegistered(name.to_owned())),
        }
    }

    /// Whether a procedure called `name` is registered.
    pub fn has_procedure(&self, name: &str) -> bool {
        read(&self.procedures).contains_key(name)
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
        write(&self.handlers).insert(kind, Arc::new(TypedHandler(handler, PhantomData)));
        Ok(())
    }

    /// Removes the handler of `kind`; returns whether there was one.
    pub fn off(&self, kind: &str) -> bool {
        write(&self.handlers).remove(kind).is_some()
    }

    pub(crate) fn procedure(&self, name: &str) -> Option<Arc<dyn Procedure<C>>> {
        read(&self.procedures).get(name).cloned()
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn Handler<C>>> {
        read(&self.handlers).get(kind).cloned()
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
