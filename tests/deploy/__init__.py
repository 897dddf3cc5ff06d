"""Deployment artefacts: the Dockerfile (hadolint), docker/compose.yaml (compose specification, settings, mounts,
Redis ACLs against a real redis-server) and the Helm chart (rendered by helm inside pytest, every object validated
by kubernetes-validate --strict, properties asserted on the objects). No Docker engine or cluster is needed."""
