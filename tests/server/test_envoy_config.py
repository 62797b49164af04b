"""deploy/envoy.yaml: the load-balancer config docs/server.md shows is well-formed and fits this server."""

from __future__ import annotations

import pathlib

import yaml

from server.app import SERVICE_NAME

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "envoy.yaml"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_clusters_speak_http2_and_check_the_xcube_health_service():
    clusters = _load()["static_resources"]["clusters"]
    assert clusters, "no upstream cluster"
    for cluster in clusters:
        options = cluster["typed_extension_protocol_options"][HTTP_OPTIONS]
        assert options["@type"].endswith(HTTP_OPTIONS)
        assert "http2_protocol_options" in options["explicit_http_config"], "gRPC needs HTTP/2 upstream"
        endpoints = [lb["endpoint"]["address"]["socket_address"] for group in cluster["load_assignment"]["endpoints"]
                     for lb in group["lb_endpoints"]]
        assert len(endpoints) >= 2 and all(0 < int(e["port_value"]) < 65536 for e in endpoints)
        assert cluster["load_assignment"]["cluster_name"] == cluster["name"]
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"]["service_name"] == SERVICE_NAME  # NOT_SERVING when loading or full
        assert check["unhealthy_threshold"] >= 1 and check["healthy_threshold"] >= 1
        assert _seconds(check["timeout"]) < _seconds(check["interval"])


def test_routes_send_xcube_calls_to_a_cluster_without_cutting_streams():
    static = _load()["static_resources"]
    names = {c["name"] for c in static["clusters"]}
    (listener,) = static["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = [f["typed_config"] for f in chain["filters"] if f["typed_config"]["@type"] == HCM]
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    by_prefix = {r["match"]["prefix"]: r["route"] for r in routes}
    xcube = by_prefix[f"/{SERVICE_NAME}/"]
    assert xcube["cluster"] in names
    assert _seconds(xcube["timeout"]) == 0, "a route timeout would cut long Generate streams"
    assert by_prefix["/grpc.health.v1.Health/"]["cluster"] in names


def _seconds(value: str) -> float:
    assert isinstance(value, str) and value.endswith("s"), value
    return float(value[:-1])
