@replay
Feature: A run keeps the workflow version it started on
  Publishing a new version of a workflow must never change a run already under
  way. The run finishes on the version it was pinned to, and replaying it later
  uses that version, whatever has been published since.

  Background:
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  @smoke
  Scenario: A new version published while a run waits does not change that run
    Given "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    When "acme" publishes a new version of "order-follow-up":
      | step     | type      | does                           | then     |
      | wait     | delay     | wait 1 hour                    | escalate |
      | escalate | http_call | POST the order to /escalations | done     |
      | done     | terminate | succeeded                      |          |
    And the clock moves forward 1 hour
    Then the run succeeds
    And the run went through "remind"
    And the run is pinned to version 1

  Scenario: Replaying an old run uses its pinned version, not the latest
    Given "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    And "acme" publishes a new version of "order-follow-up":
      | step     | type      | does                           | then     |
      | wait     | delay     | wait 2 hours                   | escalate |
      | escalate | http_call | POST the order to /escalations | done     |
      | done     | terminate | succeeded                      |          |
    And the clock moves forward 1 hour
    When the run is replayed
    Then replay finds no divergence
    And replay uses version 1 of the workflow

  Scenario: A delivery after the new version is published runs on the new version
    Given "acme" publishes a new version of "order-follow-up":
      | step     | type      | does                           | then     |
      | wait     | delay     | wait 1 hour                    | escalate |
      | escalate | http_call | POST the order to /escalations | done     |
      | done     | terminate | succeeded                      |          |
    When "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    And the clock moves forward 1 hour
    Then the run succeeds
    And the run went through "escalate"
    And the run is pinned to version 2
