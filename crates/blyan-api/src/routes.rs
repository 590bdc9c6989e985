//! A router that remembers its routes, so the OpenAPI document can be checked against it.
//!
//! axum's `Router` cannot list what it serves; every route of the node is therefore added
//! through [`ApiRoutes`], which records `(method, path)` beside the real route. A test compares
//! that table with the OpenAPI document both ways.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

use crate::server::AppState;

/// One served route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    /// Lower-case HTTP method (`get`, `post`, `delete`), as OpenAPI writes it.
    pub method: &'static str,
    /// The path in axum/OpenAPI template syntax (`/blocks/{hash}`).
    pub path: &'static str,
}

/// The node's routes and their table.
#[derive(Debug)]
pub struct ApiRoutes {
    router: Router<Arc<AppState>>,
    table: Vec<RouteEntry>,
}

impl Default for ApiRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add<H, T>(
        mut self,
        filter: MethodFilter,
        method: &'static str,
        path: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(RouteEntry { method, path });
        self
    }

    /// Adds `GET path`.
    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.add(MethodFilter::GET, "get", path, handler)
    }

    /// Adds `POST path`.
    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.add(MethodFilter::POST, "post", path, handler)
    }

    /// Adds `POST path` accepting bodies up to `body_bytes_max` instead of the node's
    /// `api.body_bytes_max`.
    pub fn post_with_body_limit<H, T>(
        mut self,
        path: &'static str,
        body_bytes_max: usize,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.router = self.router.route(
            path,
            on(MethodFilter::POST, handler).layer(DefaultBodyLimit::max(body_bytes_max)),
        );
        self.table.push(RouteEntry {
            method: "post",
            path,
        });
        self
    }

    /// Adds `DELETE path`.
    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.add(MethodFilter::DELETE, "delete", path, handler)
    }

    /// The routes added so far.
    pub fn table(&self) -> &[RouteEntry] {
        &self.table
    }

    pub(crate) fn into_parts(self) -> (Router<Arc<AppState>>, Vec<RouteEntry>) {
        (self.router, self.table)
    }
}
