@recipes
Feature: The catalogue's recipes work as written
  docs/steps.md shows QA the common shapes of a scenario as complete
  examples: replay a finished order, a worker dying at a moment, a fault at a
  moment as a matrix, an edit that replay names, a refused webhook, an
  operator's action, a dashboard watching live. They are copied from this
  file, so every one of them is known to run.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  @replay
  Scenario: A finished order replays exactly from its log
    Given "acme" has a finished run of "order-sync"
    When the run is replayed
    Then replay finds no divergence
    And replaying the run gives exactly the run view users saw

  @crash
  Scenario: The worker dies after the order service answered
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log

  @db-faults
  Scenario Outline: The order survives when <fault> <moment>
    Given the worker will stall <moment>
    When "acme" delivers an order webhook to "order-sync"
    And <fault>
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the order service received the order exactly once

    Examples:
      | fault                                       | moment                                         |
      | the database drops the engine's connections | after step "map" is recorded                   |
      | the network to the database is cut          | while the response of "push" is being recorded |

  @replay
  Scenario: Editing a published step in place is named by replay
    Given "acme" has a finished run of "order-sync"
    When someone edits version 1 of "order-sync" behind the engine's back:
      | step     | type      | does                                                       | then                |
      | map      | transform | {id: order.id, total: order.sum, currency: order.currency} | push                |
      | push     | http_call | POST the mapped order to /orders                           | check               |
      | check    | branch    | when push answered 200                                     | done, else rejected |
      | done     | terminate | succeeded                                                  |                     |
      | rejected | terminate | failed: the order service refused it                       |                     |
    And the run is replayed
    Then replay reports the first divergence at the result of "map"
    And the divergence says "engine decides \"EUR\", log has nothing"

  @intake
  Scenario: A webhook with a forged signature is refused and changes nothing
    When a webhook with a forged signature is sent to "order-sync" of "acme"
    Then it is refused with 401 "bad_signature"
    And nothing was recorded
    And a correct webhook sent afterwards still runs to success

  @intervention
  Scenario: An operator cancels a waiting follow-up and the log says who and why
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "the customer called to cancel"
    Then the run is canceled
    And the run replays exactly from its log

  @realtime
  Scenario: A dashboard watching the project sees the order as it happens
    Given "Priya" opens the live log of "acme"
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And "Priya" saw every event of the run as it happened
