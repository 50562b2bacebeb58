// Package flows is sidecall's engine: the per-request Exchange, the Plugin
// interfaces and Registry, the decK config model and its strict loader, the
// router, and the compiled Pipelines held in an immutable Snapshot.
//
// Choices where Kong/Envoy are silent:
//   - Header names are kept lower-case everywhere, as Envoy sends them.
//   - One mutable request view, as in Kong: kong.service.request.set_header is
//     visible to later kong.request.get_header calls. The processor turns what
//     changed (tracked, not diffed) into one Envoy reply.
//   - Kong's router precedence (traditional_compatible): routes with more
//     matching categories (hosts, headers, methods, paths) first; then regex
//     paths by regex_priority, then the longest plain prefix; ties in file order.
package flows
