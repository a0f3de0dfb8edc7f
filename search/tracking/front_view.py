"""The sweep's front as saved views of MLflow's runs page: filter, sort, columns, and the accuracy-against-size chart.

MLflow (3.15 and later) keeps an experiment's named views as experiment tags `mlflow.sharedViewState.<id>`; its runs
page lists them under "Views" and opens one from the URL parameter `viewStateShareKey=<id>`. The state written here
has the fields MLflow's own "Save as new view" writes (read back from a view saved in its UI), so the link that `run`
and `ui` print opens, in one click, the front's runs, most accurate first, with the key metrics as columns and a
scatter chart of validation accuracy against log10 trainable % (and one against each other cost objective the sweep
has, on MLflow's linear axis). A second view shows every trial the same way.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from mlflow import MlflowClient

from peftsweep.metric_names import (EPOCHS_COMPLETED, LOG10_TRAINABLE_PCT, STORED_PCT, TEST_ACCURACY,
                                    TRAINABLE_PCT, VAL_ACCURACY)
from peftsweep.search.results.objectives import LABELS, Objectives
from peftsweep.search.tracking.client import METHOD_TAG, OVER_BUDGET_TAG, PARETO_TAG, ROLE_TAG, STATUS_TAG

FRONT_FILTER = f"tags.`{PARETO_TAG}` = 'true'"  # the MLflow runs view's search box: the front alone
TRIALS_FILTER = f"tags.`{ROLE_TAG}` = 'trial'"  # every trial, not the sweeps' parent runs
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's own prefix for saved views
VIEW_ID, VIEW_NAME = "peftsweepfront", "peftsweep: the front"  # what the printed link opens
TRIALS_VIEW_ID = "peftsweeptrials"  # every trial of the sweep
# view id -> (name, runs it shows); both narrowed to the newest sweep of the experiment when saved
VIEWS = {VIEW_ID: (VIEW_NAME, FRONT_FILTER), TRIALS_VIEW_ID: ("peftsweep: every trial", TRIALS_FILTER)}
COLUMN_METRICS = (VAL_ACCURACY, TEST_ACCURACY, TRAINABLE_PCT, STORED_PCT, EPOCHS_COMPLETED)
COLUMN_TAGS = (METHOD_TAG, STATUS_TAG, PARETO_TAG)
# MLflow's scatter chart has no log axis; trainable % spans 0.01 to 100, so the chart shows its log10 (a metric
# every trial logs when it ends).
# The first scatter chart's axes; y is the quality searched (`metric:`), validation accuracy by default
CHART_X, CHART_Y = LOG10_TRAINABLE_PCT, VAL_ACCURACY
_SECTION = "peftsweep-front"


def chart_axes(objectives: Objectives) -> list[str]:
    """The x metric of each scatter chart: log10 trainable % (MLflow's charts have no log axis), then each other cost
    objective as it is."""
    return [CHART_X] + [c for c in objectives.costs if c != TRAINABLE_PCT]


def view_state(search_filter: str = FRONT_FILTER, objectives: Objectives = Objectives()) -> dict[str, Any]:
    """The runs page's state for the runs a filter selects: search facets and UI state as MLflow serialises them."""
    columns = list(dict.fromkeys((objectives.quality, objectives.test_quality, *COLUMN_METRICS, *objectives.costs)))
    scatters = [{"uuid": f"peftsweep-front-scatter{'' if i == 0 else '-' + x}", "type": "SCATTER",
                 "runsCountToCompare": 1000, "metricSectionId": _SECTION, "deleted": False, "isGenerated": False,
                 "xaxis": {"key": x, "type": "METRIC"}, "yaxis": {"key": objectives.quality, "type": "METRIC"}}
                for i, x in enumerate(chart_axes(objectives))]
    return {
        "searchFilter": search_filter,
        "orderByKey": f"metrics.`{objectives.quality}`",  # sorting by a metric lists child runs flat, not under the parent
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [f"metrics.`{m}`" for m in columns] + [f"tags.`{t}`" for t in COLUMN_TAGS]
        + ([f"tags.`{OVER_BUDGET_TAG}`"] if objectives.budgets else []),
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default charts only the first 10 runs; a front can be longer
        "compareRunSections": [{"uuid": _SECTION, "name": "Accuracy against " + ", ".join(LABELS[c] for c in objectives.costs),
                                "display": True, "isReordered": False, "deleted": False, "isGenerated": False,
                                "columns": 1, "cardHeight": 420}],
        "compareRunCharts": [
            *scatters,
            {"uuid": "peftsweep-front-curves", "type": "LINE", "runsCountToCompare": 1000,
             "metricSectionId": _SECTION, "deleted": False, "isGenerated": False, "displayName": objectives.quality,
             "metricKey": objectives.quality, "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear",
             "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
             "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
             "useGlobalLineSmoothing": True}],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def sweep_filter(search_filter: str, parent_run_id: str) -> str:
    """A filter narrowed to one sweep's trials (an experiment can hold several sweeps)."""
    return f"{search_filter} and tags.mlflow.parentRunId = '{parent_run_id}'"


def save_front_view(client: MlflowClient, experiment_id: str, parent_run_id: str,
                    objectives: Objectives = Objectives()) -> None:
    """Write (or refresh) the experiment's saved views of a sweep: its front, and every trial, with the sweep's
    objectives as columns and chart axes. A newer sweep in the same experiment takes the views over."""
    now = int(time.time() * 1000)
    for view_id, (name, search_filter) in VIEWS.items():
        state = view_state(sweep_filter(search_filter, parent_run_id), objectives)
        envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + view_id, json.dumps(envelope))


def saved_filter(client: MlflowClient, experiment_id: str, view_id: str = VIEW_ID) -> str:
    """The search filter a saved view applies."""
    envelope = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + view_id])
    return json.loads(envelope["state"])["searchFilter"]


def front_view_url(server: str, experiment_id: str, *, saved_view: bool = True, view_id: str = VIEW_ID) -> str:
    """The front in MLflow's runs page: a saved view in chart mode, or (for an experiment without the views, e.g.
    one made by an older peftsweep) the front's filter and sort alone."""
    if saved_view:
        query = urlencode({"viewStateShareKey": view_id, "compareRunsMode": "CHART"})
    else:
        query = urlencode({"searchFilter": FRONT_FILTER, "orderByKey": f"metrics.`{VAL_ACCURACY}`", "orderByAsc": "false"})
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def has_front_view(client: MlflowClient, experiment_id: str) -> bool:
    return VIEW_TAG_PREFIX + VIEW_ID in client.get_experiment(experiment_id).tags
