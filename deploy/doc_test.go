// Package deploy holds only tests: they check that what sidecall ships for deployment (the
// Helm chart, the Istio and Envoy Gateway manifests, the Dockerfile, the compose stack, the
// dashboards and the docs) is well-formed, strictly typed and consistent with the product.
//
// Choices: kubeconform cannot fetch schemas here, so every rendered Kubernetes object is
// decoded strictly into the k8s.io/api Go types (unknown fields and wrong types fail); CRDs
// (EnvoyFilter via istio.io/api protojson, ServiceMonitor and EnvoyExtensionPolicy via small
// local structs) the same way. Envoy protos inside EnvoyFilter patches are decoded with
// protojson, Anys unpacked recursively and every message checked with ValidateAll.
package deploy
