"""SIMULATION of a cluster's instances for scripts/bench-rollout.sh: each
reports (the kaws:stage and kaws:generation tags it would set on itself) on
a compressed schedule, talking to the emulator past the recording proxy so
that only kaws' own calls are counted. Nothing here runs a refresh agent or
replaces a node; the boot harness does that for real (tests/boot.rs).

usage: bench-rollout-agents.py settle CLUSTER
       bench-rollout-agents.py play CLUSTER CALLS_LOG OUT_JSON
Environment: KAWS_BENCH_MOTO (the emulator), AWS_ENDPOINT_URL (the proxy,
which marks the instance refresh done), AGENT_S, BATCH_S."""
import json
import os
import sys
import time
import urllib.request

import boto3

kw = dict(endpoint_url=os.environ["KAWS_BENCH_MOTO"], region_name="eu-west-1", aws_access_key_id="test",
          aws_secret_access_key="test")
ec2, ssm = boto3.client("ec2", **kw), boto3.client("ssm", **kw)


def announced(cluster):
    value = ssm.get_parameter(Name=f"/kaws/{cluster}/master/shared/generation")["Parameter"]["Value"]
    return value.split(" ")[0]


def instances(cluster):
    """(key, id, reported generation) of every running master and node."""
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:kaws:cluster", "Values": [cluster]}, {"Name": "instance-state-name", "Values": ["running"]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                key = "node" if "aws:autoscaling:groupName" in tags else tags.get("kaws:key", "")
                if key != "instance/bastion":
                    out.append((key, i["InstanceId"], tags.get("kaws:generation")))
    return sorted(out)


def report(ids, generation):
    for n in range(0, len(ids), 100):
        ec2.create_tags(Resources=ids[n:n + 100], Tags=[{"Key": "kaws:stage", "Value": "up"},
                                                      {"Key": "kaws:generation", "Value": generation}])


def play(cluster, calls, out):
    before = {i for _, i, _ in instances(cluster)}
    old = announced(cluster)
    # The generation apply announces once it has written the phase.
    while (want := announced(cluster)) == old:
        time.sleep(0.1)
    for key, iid, _ in instances(cluster):
        if key.startswith("instance/master-"):
            time.sleep(float(os.environ["AGENT_S"]))
            report([iid], want)
    # The nodes once kaws starts their group's instance refresh.
    rid = None
    while rid is None:
        for line in open(calls):
            c = json.loads(line)
            if c["action"] == "StartInstanceRefresh" and (c.get("params") or {}).get("InstanceRefreshId"):
                rid = c["params"]["InstanceRefreshId"]
        time.sleep(0.1)
    nodes = [i for key, i, _ in instances(cluster) if key == "node"]
    assert {i for _, i, _ in instances(cluster)} == before
    for n in range(0, len(nodes), 10):
        time.sleep(float(os.environ["BATCH_S"]))
        report(nodes[n:n + 10], want)
    last = time.time()
    urllib.request.urlopen(urllib.request.Request(
        f"{os.environ['AWS_ENDPOINT_URL']}/kaws-test/instance-refresh/{rid}?status=Successful", method="POST")).read()
    json.dump({"last_report": last, "generation": want, "nodes": len(nodes)}, open(out, "w"))


if sys.argv[1] == "settle":
    report([i for _, i, _ in instances(sys.argv[2])], announced(sys.argv[2]))
else:
    play(*sys.argv[2:5])
