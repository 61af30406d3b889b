from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents import selectors
        from billing import services as billing

        # Agents can carry a spend budget (billing is a layer below and cannot look them up).
        def check(actor, subject_id: str) -> str:  # noqa: ANN001 - a core.actors.Actor
            return str(selectors.agent_get(actor=actor, agent_id=subject_id).pk)

        def choices(actor) -> list[tuple[str, str]]:  # noqa: ANN001
            return [
                (str(pk), name)
                for pk, name in selectors.agent_list(actor=actor).values_list("pk", "name")
            ]

        billing.budget_subject_register("agent", billing.SubjectKind(check, choices))
