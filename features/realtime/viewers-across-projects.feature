@realtime @tenancy
Feature: A viewer keeps seeing only their own project, through reconnects and fixes
  A dashboard watches one project. When its token is renewed, when its
  connection stalls and recovers, when the live-log server restarts, or when
  an operator of another project fixes a run of a workflow with the same name,
  the dashboard catches up on its own project's runs and receives not one
  event of the other project's.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |
    And the project "globex" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |

  Scenario Outline: A viewer of one project sees nothing of another's run after <interruption>
    Given "Priya" opens the live log of "globex"
    When <interruption>
    And "globex" delivers an order webhook to "order-sync"
    And "acme" delivers an order webhook to "order-sync"
    Then "Priya" sees "globex"'s run but nothing of "acme"'s

    Examples:
      | interruption                 |
      | the live-log server restarts |
      | "Priya"'s token is renewed   |

  Scenario: A viewer whose connection stalls while two projects' orders run catches up on their own project's alone
    Given "Priya" opens the live log of "globex"
    When "Priya"'s connection stalls
    And "globex" delivers an order webhook to "order-sync"
    And "acme" delivers an order webhook to "order-sync"
    And "Priya"'s connection recovers
    Then "Priya" sees "globex"'s run but nothing of "acme"'s

  @intervention
  Scenario: A viewer of one project sees nothing of another project's operator cancelling a waiting follow-up
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "Priya" opens the live log of "globex"
    And "globex" has a finished run of "order-sync"
    And a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "the customer called to cancel"
    Then "Priya" sees "globex"'s run but nothing of "acme"'s
