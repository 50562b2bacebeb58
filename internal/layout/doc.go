// Package layout holds no code: its test keeps the import rules of the
// repository's layout (docs/architecture.md).
package layout
