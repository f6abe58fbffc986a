"""REST API v1 of the mlcore layer: the model registry (read-only) and the association
rules of a rules version, with a run of the miner on demand. Thin views over
mlcore.selectors and mlcore.affinity; clusterings, whose runs keep segments in step, are
the campaigns layer's API."""

from __future__ import annotations

import uuid

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketing.api_common import IdCursorPagination, query_flag, query_id
from marketing.errors import BatchInvalid, Conflict, NotFound, RowError
from marketing.serializers import DetailSerializer, ErrorsSerializer
from mlcore import learning, selectors
from mlcore.affinity import rules_mine
from mlcore.filters import AssociationRuleFilter, ModelVersionFilter
from mlcore.scores import customer_scores, model_promote, model_rollback
from mlcore.serializers import (
    AssociationRuleSerializer,
    CustomerScoresSerializer,
    ModelVersionLearningSerializer,
    ModelVersionSerializer,
    RollbackRequestSerializer,
    RulesMineQueuedSerializer,
    RulesMineRequestSerializer,
    TrainQueuedSerializer,
    TrainRequestSerializer,
)
from mlcore.tasks import association_rules_mine

BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Bad parameters, each with its field; nothing was done.")


class ModelVersionCursorPagination(IdCursorPagination):
    ordering = "-id"


@extend_schema_view(
    list=extend_schema(
        summary="List model versions",
        description="Every training run (clusters, rules…), newest first, cursor-paginated. The champion of a "
        "task and scope is the version its outputs are read from.",
        responses={200: ModelVersionSerializer(many=True), 400: BAD_INPUT},
    ),
    retrieve=extend_schema(
        summary="A model version",
        description="With its `result` (e.g. the cluster profiles), its metrics (propensity: AUC, log loss, "
        "calibration, the baselines on the same split, the comparison with the champion) and its training curve.",
        responses={200: ModelVersionLearningSerializer, 404: DetailSerializer},
    ),
)
class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = ModelVersionFilter
    pagination_class = ModelVersionCursorPagination
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        queryset = selectors.model_version_list()
        return queryset.defer("result") if self.action == "list" else queryset

    def get_serializer_class(self):
        if self.action in ("retrieve", "promote", "rollback"):
            return ModelVersionLearningSerializer
        return ModelVersionSerializer

    @extend_schema(
        summary="Train a propensity or uplift model",
        description=(
            "A new version trained on the touchpoint log (sends of the last `days` days whose outcome window has "
            "closed). It becomes the champion (and scores every customer) only if it beats the champion on the "
            "same validation rows: a higher AUC (propensity) or Qini (uplift); a tie keeps the champion. By default "
            "the run is queued on the `gpu` queue (202, with the task id); with `wait=true` it runs in the request "
            "and answers with the new version (200): for small data sets. 409 when the data cannot train a model "
            "(too few rows, one outcome only, no held-out rows for uplift); the failed version is kept."
        ),
        request=TrainRequestSerializer,
        parameters=[
            OpenApiParameter("wait", OpenApiTypes.BOOL, description="Train now and answer with the new version.")
        ],
        responses={
            200: ModelVersionLearningSerializer,
            202: TrainQueuedSerializer,
            400: BAD_INPUT,
            409: DetailSerializer,
        },
    )
    @action(detail=False, methods=["post"], url_path="train", filter_backends=[], pagination_class=None)
    def train(self, request: Request) -> Response:
        wait = query_flag(request, "wait")
        body = TrainRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        options = dict(body.validated_data)
        task = options.pop("task")
        if wait:
            version = learning.model_train(task, **options)
            return Response(ModelVersionLearningSerializer(version).data)
        task_id = learning.model_train_enqueue(task, options)
        answer = {
            "task_id": task_id,
            "task": task,
            "options": options,
            "message": "Training queued on the gpu queue; see /api/v1/model-versions.",
        }
        return Response(TrainQueuedSerializer(answer).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Make a version the champion",
        description="A succeeded propensity or uplift version becomes the champion whatever its comparison said; "
        "every customer is rescored with it. 409 for another task, a version that did not succeed, or the champion.",
        request=None,
        responses={200: ModelVersionLearningSerializer, 404: DetailSerializer, 409: DetailSerializer},
    )
    @action(detail=True, methods=["post"], url_path="promote", filter_backends=[])
    def promote(self, request: Request, pk: str) -> Response:
        version = model_promote(int(pk))
        return Response(ModelVersionLearningSerializer(version).data)

    @extend_schema(
        summary="Roll the champion back",
        description="This version must be the champion of its task (propensity or uplift). The champion becomes "
        "`to` (a succeeded version of the same task) or, by default, the version this one replaced; every customer "
        "is rescored. Answers with the new champion. 409 when there is nothing to roll back to.",
        request=RollbackRequestSerializer,
        responses={200: ModelVersionLearningSerializer, 400: BAD_INPUT, 404: DetailSerializer, 409: DetailSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rollback", filter_backends=[])
    def rollback(self, request: Request, pk: str) -> Response:
        body = RollbackRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        version = learning.model_version(int(pk))
        if not version.is_champion:
            raise Conflict(f"Model version {version.pk} is not the champion: only the champion is rolled back.")
        target = model_rollback(version.task, to=body.validated_data.get("to"))
        return Response(ModelVersionLearningSerializer(target).data)


class RulePagination(PageNumberPagination):
    """Page numbers, not a cursor: the list sorts by confidence or support as well as by
    rank, and a version holds at most mlcore.affinity.MAX_RULES rules, so the count is cheap."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


@extend_schema_view(
    list=extend_schema(
        summary="List association rules",
        description=(
            "The rules of the champion rules version (the one affinity segments use), or of `model_version`; "
            "an empty list before the first run. Sku filters match whole items: `item=A-1` does not match "
            "`A-10`. Page-numbered (`page`, `page_size` up to 1000)."
        ),
        parameters=[
            OpenApiParameter(
                "model_version", OpenApiTypes.INT, description="A rules version's id (default: the champion)."
            )
        ],
        responses={200: AssociationRuleSerializer(many=True), 400: BAD_INPUT, 404: DetailSerializer},
    ),
    retrieve=extend_schema(summary="An association rule", responses={200: AssociationRuleSerializer}),
)
class AssociationRuleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = AssociationRuleSerializer
    filterset_class = AssociationRuleFilter
    pagination_class = RulePagination
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request to read
            return selectors.association_rules(None)
        if self.action != "list":
            return selectors.association_rules_all()
        version_id = query_id(self.request, "model_version")
        try:
            version = selectors.rules_version(version_id)
        except selectors.WrongTask as exc:
            raise BatchInvalid([RowError(row=None, field="model_version", message=exc.message)]) from None
        return selectors.association_rules(version)

    @extend_schema(
        summary="Mine association rules now",
        description=(
            "Frequent itemsets and rules from the order baskets (the purchase touchpoints sharing an order id), "
            "stored as a new rules version that becomes the champion. Omitted parameters come from "
            "settings.AFFINITY_RULES, else the defaults. By default the run is queued (202, with the task id); "
            "with `wait=true` it runs in the request and answers with the new version (200): seconds on a few "
            "hundred thousand baskets, longer at a low min_support."
        ),
        request=RulesMineRequestSerializer,
        parameters=[
            OpenApiParameter("wait", OpenApiTypes.BOOL, description="Run now and answer with the new version.")
        ],
        responses={200: ModelVersionSerializer, 202: RulesMineQueuedSerializer, 400: BAD_INPUT},
    )
    @action(detail=False, methods=["post"], url_path="mine", filter_backends=[], pagination_class=None)
    def mine(self, request: Request) -> Response:
        wait = query_flag(request, "wait")
        body = RulesMineRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        params = body.validated_data
        if wait:
            return Response(ModelVersionSerializer(rules_mine(**params)).data)
        task_id = str(uuid.uuid4())
        # After commit, with the id chosen now so the answer can name it.
        transaction.on_commit(lambda: association_rules_mine.apply_async(kwargs=params, task_id=task_id))
        body = {"task_id": task_id, "params": params, "message": "Rules run queued; see /api/v1/model-versions."}
        return Response(RulesMineQueuedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class CustomerScoresView(APIView):
    @extend_schema(
        summary="A customer's model scores",
        description=(
            "The customer's score under the propensity champion (P(goal) after a typical send) and the uplift "
            "champion (predicted incremental P(goal) if sent), each with the version it came from; null where "
            "there is no champion or the customer was not scored yet (scores are written at each promotion). The "
            "customer is named by external id, or by id when no external id matches."
        ),
        parameters=[
            OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, description="External id, or id."),
        ],
        responses={200: CustomerScoresSerializer, 404: DetailSerializer},
        tags=["customers"],
    )
    def get(self, request: Request, key: str) -> Response:
        customer = learning.customer_by_key(key)
        if customer is None:
            raise NotFound(f"No customer with external id or id {key!r}.")
        body = {"customer_id": customer.pk, "external_id": customer.external_id, **customer_scores(customer)}
        return Response(CustomerScoresSerializer(body).data)
