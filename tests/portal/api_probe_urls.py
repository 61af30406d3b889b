"""A URLconf for the API base class tests: probe views declaring permissions, raising errors."""

from django.core.exceptions import ValidationError
from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response

from accounts.models import User
from core.api import PUBLIC, ApiView, InputSerializer
from portal.urls_tenant import handler400, handler403, handler404, handler500  # noqa: F401


class ProbeInputSerializer(InputSerializer):
    count = serializers.IntegerField(min_value=1)


class ProbeApi(ApiView):
    required = {"GET": "org:read", "POST": "members:invite", "DELETE": PUBLIC}

    def get(self, request):
        return Response({"scheme": request.auth.scheme, "actor": self.actor.kind})

    def post(self, request):
        data = ProbeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"count": data.validated_data["count"]}, status=201)

    def delete(self, request):
        return Response({"actor": self.actor.kind})


class ErrorsApi(ApiView):
    required = {"GET": PUBLIC}

    def get(self, request, kind: str):
        if kind == "validation":
            raise ValidationError({"name": ["Too long."]})
        if kind == "missing":
            User.objects.get(pk=-1)
        raise RuntimeError("boom")


urlpatterns = [
    path("api/v1/probe/", ProbeApi.as_view()),
    path("api/v1/errors/<str:kind>/", ErrorsApi.as_view()),
    path("", include("portal.urls_tenant")),
]
