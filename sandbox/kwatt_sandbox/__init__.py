"""kwatt's sandbox cluster: a real Kubernetes control plane with simulated GPU nodes.

A test and demo harness; production is a real cluster. etcd, kube-apiserver,
kube-controller-manager and kube-scheduler are Kubernetes' own binaries, built once
per machine from their Go modules (`kwatt_sandbox.controlplane`); only the kubelets
(`kwatt_sandbox.nodes`) and the GPUs (`kwatt_sandbox.gpu`) are simulated. Start one
with `kwatt sandbox`, or from tests with `kwatt_sandbox.testing.running_sandbox`.
"""
