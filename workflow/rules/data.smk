# Raw trees and prepared data. `rotrnn stage raw` makes a task's raw tree (fixture, generated ListOps or download;
# LRA's four tasks share one download) and ends with a completion marker, the rule's output: a directory output
# would be deleted before a rerun, and with it a partly downloaded archive that the downloader resumes.
import json
import re

from rotrnn.pipeline import RAW_MARKER

RAW_TASK = PLAN.raw_targets()  # raw folder (relative to paths.raw) -> the task whose stage fetches it


rule raw:
    output:
        f"{PLAN.paths()['raw']}/{{rawkey}}/{RAW_MARKER}",
    wildcard_constraints:
        rawkey="|".join(map(re.escape, RAW_TASK)) or "(?!)",
    params:
        task=lambda wc: RAW_TASK[wc.rawkey],
    log:
        f"logs/{SUITE}/raw/{{rawkey}}.log",
    shell:
        "rotrnn stage raw --params {PARAMS:q} --suite {SUITE:q} --task {params.task:q} > {log:q} 2>&1"


def _raw_input(wc):
    marker = PLAN.raw_marker(wc.task)
    return [marker] if marker else []  # generated synthetic tasks have no raw stage


rule prepare:
    input:
        _raw_input,
    output:
        directory(PLAN.prepared_dir("{task}")),
    params:
        # rerun when the task's resolved data block changes (Snakemake's params trigger)
        data=lambda wc: json.dumps(PLAN.data(wc.task), sort_keys=True),
    log:
        f"logs/{SUITE}/prepare/{{task}}.log",
    threads: 1
    resources:
        mem_mb=lambda wc: 16000 if SUITE != "smoke" and wc.task in ("pathx", "speech35") else 4000,
        runtime=lambda wc: 15 if SUITE == "smoke" else 240,
    shell:
        "rotrnn stage prepare --params {PARAMS:q} --suite {SUITE:q} --task {wildcards.task:q} > {log:q} 2>&1"
