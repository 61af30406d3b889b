"""People on an organization's host: login (and its code), logout, password reset, your profile
and two-factor authentication, members, invitations."""

from django.urls import path

from accounts import views
from accounts.throttle import (
    LOGIN_CODE_LIMITS,
    LOGIN_LIMITS,
    PASSWORD_RESET_LIMITS,
    TWO_FACTOR_PROOF_LIMITS,
    throttle_posts,
)

app_name = "accounts"

urlpatterns = [
    path("login/", throttle_posts(*LOGIN_LIMITS)(views.LoginView.as_view()), name="login"),
    path("login/code/", throttle_posts(*LOGIN_CODE_LIMITS)(views.login_code), name="login-code"),
    path("login/handoff/", views.login_handoff, name="login-handoff"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset/",
        throttle_posts(*PASSWORD_RESET_LIMITS)(views.PasswordResetView.as_view()),
        name="password-reset",
    ),
    path("password-reset/sent/", views.PasswordResetDoneView.as_view(), name="password-reset-done"),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path(
        "password-reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
    path("profile/", views.profile, name="profile"),
    path("profile/password/", views.password_change, name="password-change"),
    path("profile/sessions/end-others/", views.sessions_end_others, name="sessions-end-others"),
    path("profile/two-factor/", views.two_factor_setup, name="two-factor-setup"),
    path("profile/two-factor/recovery-codes/", views.two_factor_codes, name="two-factor-codes"),
    path(
        "profile/two-factor/recovery-codes/new/",
        throttle_posts(*TWO_FACTOR_PROOF_LIMITS)(views.recovery_codes_regenerate),
        name="two-factor-codes-regenerate",
    ),
    path(
        "profile/two-factor/disable/",
        throttle_posts(*TWO_FACTOR_PROOF_LIMITS)(views.two_factor_disable),
        name="two-factor-disable",
    ),
    path("members/", views.members, name="members"),
    path("members/invite/", views.invitation_create, name="invitation-create"),
    path(
        "members/invitations/<int:invitation_id>/resend/",
        views.invitation_resend,
        name="invitation-resend",
    ),
    path(
        "members/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation-revoke",
    ),
    path("members/<int:user_id>/role/", views.member_change_role, name="member-change-role"),
    path(
        "members/<int:user_id>/two-factor/reset/",
        views.member_two_factor_reset,
        name="member-two-factor-reset",
    ),
    path("members/<int:user_id>/deactivate/", views.member_deactivate, name="member-deactivate"),
    path("invite/accept/", views.invitation_accept, name="invitation-accept"),
    path("invite/<str:token>/", views.invitation_open, name="invitation-open"),
]
